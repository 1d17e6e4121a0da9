//! Late outcomes: when a portal was told OUTCOME_UNKNOWN, the agent's answer
//! may still come (it finishes, or reconnects and posts it). The broker keeps
//! that answer, sealed as it came, for `outcome_retention`, so the portal can
//! fetch it with GetOutcome. Kept in the store so a broker restart does not
//! lose it; the bytes are ciphertext the broker cannot open. In cluster mode
//! they are kept in the cluster's outcomes bucket instead
//! ([`crate::cluster::kv::outcomes`]), so that any node can answer.

use std::time::Duration;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::cluster::kv::outcomes::{self as cluster, OutcomeBucket};
use crate::sessions::AgentAnswer;
use crate::store::{Store, StoreError, io};
use crate::time::now_unix_ms;

/// `tenant/request_id` -> encoded [`Outcome`]. Neither part contains '/'.
pub(crate) const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");

/// Bounds the disk one tenant's agents can fill with posted replies. One
/// node only: in cluster mode counting a tenant's keys would take a scan of
/// the bucket per reply, so there the cap does not apply; the bucket's
/// max age (the retention) bounds what is kept.
pub const MAX_OUTCOMES_PER_TENANT: usize = 10_000;

/// What the broker knows of a request's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub agent_id: String,
    pub expires_unix_ms: i64,
    /// `None` while the broker still waits for the agent to post it.
    pub answer: Option<StoredAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredAnswer {
    Envelope(Vec<u8>),
    Error { code: i32, message: String },
}

impl From<AgentAnswer> for StoredAnswer {
    fn from(a: AgentAnswer) -> StoredAnswer {
        match a {
            AgentAnswer::Envelope(e) => StoredAnswer::Envelope(e),
            AgentAnswer::Error { code, message } => StoredAnswer::Error { code, message },
        }
    }
}

const FORMAT: u8 = 1;

impl Outcome {
    /// version, state (0 waiting, 1 envelope, 2 error), expiry (i64 BE),
    /// code (i32 BE), agent id length (u16 BE), agent id, then the envelope
    /// or the error message.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (state, code, rest): (u8, i32, &[u8]) = match &self.answer {
            None => (0, 0, &[]),
            Some(StoredAnswer::Envelope(e)) => (1, 0, e),
            Some(StoredAnswer::Error { code, message }) => (2, *code, message.as_bytes()),
        };
        let id = &self.agent_id.as_bytes()[..self.agent_id.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(17 + id.len() + rest.len());
        out.push(FORMAT);
        out.push(state);
        out.extend_from_slice(&self.expires_unix_ms.to_be_bytes());
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&(id.len() as u16).to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(rest);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Outcome> {
        let (&[FORMAT, state], rest) = bytes.split_first_chunk::<2>()? else {
            return None;
        };
        let (expires, rest) = rest.split_first_chunk::<8>()?;
        let (code, rest) = rest.split_first_chunk::<4>()?;
        let (len, rest) = rest.split_first_chunk::<2>()?;
        let len = u16::from_be_bytes(*len) as usize;
        let agent_id = String::from_utf8(rest.get(..len)?.to_vec()).ok()?;
        let rest = &rest[len..];
        let answer = match state {
            0 => None,
            1 => Some(StoredAnswer::Envelope(rest.to_vec())),
            2 => Some(StoredAnswer::Error {
                code: i32::from_be_bytes(*code),
                message: String::from_utf8_lossy(rest).into_owned(),
            }),
            _ => return None,
        };
        Some(Outcome {
            agent_id,
            expires_unix_ms: i64::from_be_bytes(*expires),
            answer,
        })
    }
}

fn key(tenant: &str, request_id: &str) -> String {
    format!("{tenant}/{request_id}")
}

/// The late-outcome table, with the retention applied.
pub struct Outcomes {
    backend: Backend,
    retention: Duration,
}

enum Backend {
    Local(Store),
    // Boxed: a bucket handle carries its stream's whole info.
    Cluster(Box<OutcomeBucket>),
}

impl Outcomes {
    pub fn new(store: Store, retention: Duration) -> Outcomes {
        Outcomes {
            backend: Backend::Local(store),
            retention,
        }
    }

    /// Outcomes in the cluster's outcomes bucket, whose max age should be
    /// `retention` (see [`crate::cluster::kv::open_buckets`]).
    pub fn cluster(bucket: async_nats::jetstream::kv::Store, retention: Duration) -> Outcomes {
        Outcomes {
            backend: Backend::Cluster(Box::new(OutcomeBucket::new(bucket))),
            retention,
        }
    }

    fn expiry(&self) -> i64 {
        now_unix_ms().saturating_add(self.retention.as_millis() as i64)
    }

    /// The portal was told OUTCOME_UNKNOWN: remember that an answer is
    /// awaited, unless one already arrived.
    pub async fn expect(
        &self,
        tenant: &str,
        request_id: &str,
        agent_id: &str,
    ) -> Result<(), StoreError> {
        let record = Outcome {
            agent_id: agent_id.to_owned(),
            expires_unix_ms: self.expiry(),
            answer: None,
        };
        let store = match &self.backend {
            Backend::Local(store) => store,
            Backend::Cluster(bucket) => {
                let keys = cluster::keys(tenant, request_id);
                return Ok(bucket.expect(&keys, &record).await?);
            }
        };
        self.write(
            store,
            key(tenant, request_id),
            tenant.to_owned(),
            record,
            false,
        )
        .await
        .map(|_| ())
    }

    /// Keeps an answer that arrived after its portal call ended. `false`
    /// when the tenant already has the most outcomes kept.
    pub async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        agent_id: &str,
        answer: AgentAnswer,
    ) -> Result<bool, StoreError> {
        let record = Outcome {
            agent_id: agent_id.to_owned(),
            expires_unix_ms: self.expiry(),
            answer: Some(answer.into()),
        };
        let store = match &self.backend {
            Backend::Local(store) => store,
            Backend::Cluster(bucket) => {
                let keys = cluster::keys(tenant, request_id);
                return Ok(bucket.record(&keys, &record).await?);
            }
        };
        self.write(
            store,
            key(tenant, request_id),
            tenant.to_owned(),
            record,
            true,
        )
        .await
    }

    async fn write(
        &self,
        store: &Store,
        key: String,
        tenant: String,
        record: Outcome,
        answered: bool,
    ) -> Result<bool, StoreError> {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            let tx = store.db().begin_write().map_err(io("write outcome"))?;
            let written = {
                let mut table = tx.open_table(OUTCOMES).map_err(io("write outcome"))?;
                let existing = table
                    .get(key.as_str())
                    .map_err(io("read outcome"))?
                    .and_then(|v| Outcome::decode(v.value()));
                match existing {
                    // An answer is never replaced: the first one is the agent's.
                    Some(Outcome {
                        answer: Some(_), ..
                    }) => false,
                    // Waiting already: a second expect changes nothing.
                    Some(_) if !answered => false,
                    existing => {
                        let lower = format!("{tenant}/");
                        let upper = format!("{tenant}0");
                        let kept = table
                            .range(lower.as_str()..upper.as_str())
                            .map_err(io("count outcomes"))?
                            .take(MAX_OUTCOMES_PER_TENANT)
                            .count();
                        if existing.is_none() && kept >= MAX_OUTCOMES_PER_TENANT {
                            false
                        } else {
                            table
                                .insert(key.as_str(), record.encode().as_slice())
                                .map_err(io("write outcome"))?;
                            true
                        }
                    }
                }
            };
            tx.commit().map_err(io("commit outcome"))?;
            Ok(written)
        })
        .await
        .map_err(|_| StoreError::Cancelled)?
    }

    /// What is known of a request's outcome; `None` also once it expired.
    pub async fn get(&self, tenant: &str, request_id: &str) -> Result<Option<Outcome>, StoreError> {
        let store = match &self.backend {
            Backend::Local(store) => store.clone(),
            Backend::Cluster(bucket) => {
                let found = bucket.get(&cluster::keys(tenant, request_id)).await?;
                return Ok(found.filter(|o| o.expires_unix_ms > now_unix_ms()));
            }
        };
        let key = key(tenant, request_id);
        tokio::task::spawn_blocking(move || {
            let tx = store.db().begin_read().map_err(io("read outcome"))?;
            let table = tx.open_table(OUTCOMES).map_err(io("read outcome"))?;
            let found = table
                .get(key.as_str())
                .map_err(io("read outcome"))?
                .and_then(|v| Outcome::decode(v.value()));
            Ok(found.filter(|o| o.expires_unix_ms > now_unix_ms()))
        })
        .await
        .map_err(|_| StoreError::Cancelled)?
    }

    /// Deletes expired outcomes; how many. Nothing to do in cluster mode:
    /// the bucket's max age expires them.
    pub async fn purge(&self) -> Result<usize, StoreError> {
        let store = match &self.backend {
            Backend::Local(store) => store.clone(),
            Backend::Cluster(_) => return Ok(0),
        };
        tokio::task::spawn_blocking(move || {
            let now = now_unix_ms();
            let tx = store.db().begin_write().map_err(io("purge outcomes"))?;
            let removed = {
                let mut table = tx.open_table(OUTCOMES).map_err(io("purge outcomes"))?;
                let before = table.len().map_err(io("purge outcomes"))?;
                table
                    .retain(|_, v| Outcome::decode(v).is_some_and(|o| o.expires_unix_ms > now))
                    .map_err(io("purge outcomes"))?;
                before - table.len().map_err(io("purge outcomes"))?
            };
            tx.commit().map_err(io("commit outcomes"))?;
            Ok(removed as usize)
        })
        .await
        .map_err(|_| StoreError::Cancelled)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcomes(retention: Duration) -> (tempfile::TempDir, Outcomes) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("b.redb")).unwrap();
        (dir, Outcomes::new(store, retention))
    }

    #[test]
    fn records_round_trip() {
        for answer in [
            None,
            Some(StoredAnswer::Envelope(vec![1, 2, 3])),
            Some(StoredAnswer::Error {
                code: 3,
                message: "REPLAYED: x".into(),
            }),
        ] {
            let o = Outcome {
                agent_id: "dc01".into(),
                expires_unix_ms: 42,
                answer,
            };
            assert_eq!(Outcome::decode(&o.encode()), Some(o));
        }
        assert_eq!(Outcome::decode(&[9, 9, 9]), None);
    }

    #[tokio::test]
    async fn an_answer_replaces_waiting_and_is_never_replaced() {
        let (_dir, o) = outcomes(Duration::from_secs(60));
        o.expect("t", "r1", "dc01").await.unwrap();
        assert_eq!(o.get("t", "r1").await.unwrap().unwrap().answer, None);
        assert!(
            o.record("t", "r1", "dc01", AgentAnswer::Envelope(vec![7]))
                .await
                .unwrap()
        );
        assert!(
            !o.record("t", "r1", "dc02", AgentAnswer::Envelope(vec![8]))
                .await
                .unwrap()
        );
        o.expect("t", "r1", "dc01").await.unwrap();
        let got = o.get("t", "r1").await.unwrap().unwrap();
        assert_eq!(got.answer, Some(StoredAnswer::Envelope(vec![7])));
        assert_eq!(got.agent_id, "dc01");
        // Tenants do not see each other's outcomes.
        assert_eq!(o.get("u", "r1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn expired_outcomes_are_gone_and_purged() {
        let (_dir, o) = outcomes(Duration::ZERO);
        o.record("t", "r1", "dc01", AgentAnswer::Envelope(vec![7]))
            .await
            .unwrap();
        assert_eq!(o.get("t", "r1").await.unwrap(), None);
        assert_eq!(o.purge().await.unwrap(), 1);
    }
}
