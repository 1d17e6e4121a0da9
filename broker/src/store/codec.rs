//! How records become bytes, in one place for both backends: the redb
//! tables and the cluster's key-value buckets hold the same bytes (a
//! bucket seals a tenant record's bytes before storing them).
//!
//! Tenant records are JSON objects that carry their format in a `format`
//! field (format 2); a record without one is format 1, as the brokers
//! before it wrote them. A field rather than a leading byte because nodes
//! of two releases share the cluster's tenants bucket during a rolling
//! upgrade: an older node reads a format 2 record as it reads its own
//! (serde ignores the field it does not know), and this one reads both.
//!
//! Outcome records are binary with a leading format byte (format 2; format
//! 1, without an error's refusal, is still read).

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::outcome::{OutcomeRecord, StoredAnswer};
use super::records::TenantRecord;

/// The tenant record format this broker writes.
pub const TENANT_FORMAT: u32 = 2;

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    // serde_json's own message may quote the input, which holds keys.
    #[error("the value is not a tenant record ({category} error at column {column})")]
    Json {
        category: &'static str,
        column: usize,
    },
    #[error(
        "the tenant record has format {found}, newer than the {TENANT_FORMAT} this broker reads: \
         it was written by a newer broker"
    )]
    TooNew { found: u32 },
}

impl CodecError {
    fn json(e: &serde_json::Error) -> CodecError {
        use serde_json::error::Category;
        CodecError::Json {
            category: match e.classify() {
                Category::Io => "io",
                Category::Syntax => "syntax",
                Category::Data => "data",
                Category::Eof => "end of input",
            },
            column: e.column(),
        }
    }
}

#[derive(Serialize)]
struct Versioned<'a> {
    format: u32,
    #[serde(flatten)]
    record: &'a TenantRecord,
}

/// The format alone; every other field is skipped unread.
#[derive(Deserialize)]
struct Format {
    format: Option<u32>,
}

/// A tenant record's bytes, in [`TENANT_FORMAT`]. Zeroized when dropped:
/// they hold the tenant's keys.
pub fn encode_tenant(record: &TenantRecord) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    encode_tenant_as(record, TENANT_FORMAT)
}

/// A tenant record's bytes in format 1 or 2 (tests write format 1 to check
/// that it is still read).
pub fn encode_tenant_as(
    record: &TenantRecord,
    format: u32,
) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    let bytes = if format < 2 {
        serde_json::to_vec(record)
    } else {
        serde_json::to_vec(&Versioned { format, record })
    };
    bytes.map(Zeroizing::new).map_err(|e| CodecError::json(&e))
}

/// The format of a tenant record's bytes: 1 when it names none.
pub fn tenant_format(bytes: &[u8]) -> Result<u32, CodecError> {
    let Format { format } = serde_json::from_slice(bytes).map_err(|e| CodecError::json(&e))?;
    Ok(format.unwrap_or(1))
}

/// A tenant record of any format this broker knows.
pub fn decode_tenant(bytes: &[u8]) -> Result<TenantRecord, CodecError> {
    let found = tenant_format(bytes)?;
    if found > TENANT_FORMAT {
        return Err(CodecError::TooNew { found });
    }
    // Formats 1 and 2 differ only in the `format` field, which this skips.
    serde_json::from_slice(bytes).map_err(|e| CodecError::json(&e))
}

/// The outcome format written. Format 1 (before refusals were kept) is
/// still read: its errors read with refusal 0.
const OUTCOME_FORMAT: u8 = 2;
const OUTCOME_FORMAT_1: u8 = 1;

/// version (2), state (0 waiting, 1 envelope, 2 error, 3 failed), expiry
/// (i64 BE), code (i32 BE; in state 0, 1 if the agent acknowledged the
/// request), agent id length (u16 BE), agent id, then the envelope, or for
/// states 2 and 3 the refusal (i32 BE) and the error message. Format 1 is
/// the same without the refusal.
pub fn encode_outcome(record: &OutcomeRecord) -> Vec<u8> {
    let (state, code, refusal, rest): (u8, i32, Option<i32>, &[u8]) = match &record.answer {
        None => (0, i32::from(record.acknowledged), None, &[]),
        Some(StoredAnswer::Envelope(e)) => (1, 0, None, e),
        Some(StoredAnswer::Error {
            code,
            refusal,
            message,
        }) => (2, *code, Some(*refusal), message.as_bytes()),
        Some(StoredAnswer::Failed { refusal, message }) => {
            (3, 0, Some(*refusal), message.as_bytes())
        }
    };
    let id = &record.agent_id.as_bytes()[..record.agent_id.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(21 + id.len() + rest.len());
    out.push(OUTCOME_FORMAT);
    out.push(state);
    out.extend_from_slice(&record.expires_unix_ms.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(id.len() as u16).to_be_bytes());
    out.extend_from_slice(id);
    if let Some(refusal) = refusal {
        out.extend_from_slice(&refusal.to_be_bytes());
    }
    out.extend_from_slice(rest);
    out
}

/// The expiry alone, without copying the answer (the same place in both
/// formats).
pub fn outcome_expiry(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(*bytes.get(2..10)?.first_chunk::<8>()?))
}

/// From the header alone, without copying the answer: `Some(agent id)` if
/// the record awaits an answer from that agent (empty: any of the
/// tenant's), `None` if it holds one. `None` outside: not a record.
pub fn outcome_awaited_from(bytes: &[u8]) -> Option<Option<&str>> {
    let (&[_format, state], rest) = bytes.split_first_chunk::<2>()?;
    let rest = rest.get(12..)?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let agent_id = std::str::from_utf8(rest.get(..u16::from_be_bytes(*len) as usize)?).ok()?;
    Some((state == 0).then_some(agent_id))
}

/// An outcome record of either format; `None` if the bytes are not one.
pub fn decode_outcome(bytes: &[u8]) -> Option<OutcomeRecord> {
    let (&[format, state], rest) = bytes.split_first_chunk::<2>()?;
    if format != OUTCOME_FORMAT && format != OUTCOME_FORMAT_1 {
        return None;
    }
    let (expires, rest) = rest.split_first_chunk::<8>()?;
    let (code, rest) = rest.split_first_chunk::<4>()?;
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = u16::from_be_bytes(*len) as usize;
    let agent_id = String::from_utf8(rest.get(..len)?.to_vec()).ok()?;
    let rest = &rest[len..];
    // An error's refusal: after the agent id from format 2 on.
    let refused = |rest: &[u8]| -> Option<(i32, String)> {
        let (refusal, rest) = match format {
            OUTCOME_FORMAT_1 => (0, rest),
            _ => {
                let (refusal, rest) = rest.split_first_chunk::<4>()?;
                (i32::from_be_bytes(*refusal), rest)
            }
        };
        Some((refusal, String::from_utf8_lossy(rest).into_owned()))
    };
    let answer = match state {
        0 => None,
        1 => Some(StoredAnswer::Envelope(rest.to_vec())),
        2 => {
            let (refusal, message) = refused(rest)?;
            Some(StoredAnswer::Error {
                code: i32::from_be_bytes(*code),
                refusal,
                message,
            })
        }
        3 => {
            let (refusal, message) = refused(rest)?;
            Some(StoredAnswer::Failed { refusal, message })
        }
        _ => return None,
    };
    Some(OutcomeRecord {
        agent_id,
        acknowledged: answer.is_some() || i32::from_be_bytes(*code) != 0,
        expires_unix_ms: i64::from_be_bytes(*expires),
        answer,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::store::records::TenantKeys;

    fn record() -> TenantRecord {
        TenantRecord {
            name: "contoso".into(),
            connector_name: "Contoso".into(),
            writeback_enabled: true,
            created_unix_ms: 1,
            modified_unix_ms: 2,
            keys: TenantKeys::generate().unwrap(),
            revoked_agents: BTreeSet::from(["old".to_owned()]),
            agent_keys: Vec::new(),
        }
    }

    #[test]
    fn both_tenant_formats_read_back() {
        let record = record();
        for format in [1, 2] {
            let bytes = encode_tenant_as(&record, format).unwrap();
            assert_eq!(tenant_format(&bytes).unwrap(), format);
            let back = decode_tenant(&bytes).unwrap();
            assert_eq!(back.name, record.name);
            assert_eq!(back.keys.send.primary, record.keys.send.primary);
            assert_eq!(back.revoked_agents, record.revoked_agents);
        }
        assert_eq!(
            tenant_format(&encode_tenant(&record).unwrap()).unwrap(),
            TENANT_FORMAT
        );
    }

    #[test]
    fn a_newer_tenant_format_is_refused_and_garbage_named_without_quoting_it() {
        let bytes = encode_tenant_as(&record(), 3).unwrap();
        assert_eq!(
            decode_tenant(&bytes).unwrap_err(),
            CodecError::TooNew { found: 3 }
        );
        let err = decode_tenant(b"{\"secret\": ").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
