//! Late outcomes in the outcomes bucket, so that GetOutcome answers on any
//! node: the cluster's [`OutcomeStore`]. Values are outcome records as the
//! single-node store keeps them ([`crate::store::codec`]): the envelope
//! inside is sealed by the agent already. The bucket's max age is
//! the outcome retention, so NATS expires them by itself.
//!
//! Each request has two keys, each written once with a KV create: the
//! awaited marker and the answer. Creates are the one compare-and-set
//! nats-server 2.9 checks when it applies a write (see [`super::cas`]), so
//! when two agents post at once exactly one answer is kept, with no read
//! before the write.
//!
//! KV keys allow `[-/_=.a-zA-Z0-9]` and request ids also have `:`, so the
//! request id goes into the key in unpadded base64url:
//! `<tenant>.awaited.<id>` and `<tenant>.answer.<id>`.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, EntryErrorKind, Operation};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::KvError;
use super::retry::{failed, retry};
use crate::outcomes::Outcomes;
use crate::store::codec::{decode_outcome, encode_outcome};
use crate::store::{Admission, OutcomeRecord, OutcomeStore, StoreError};

impl Outcomes {
    /// Outcomes in the cluster's outcomes bucket, whose max age should be
    /// `retention` (see [`super::open_buckets`]).
    pub fn cluster(bucket: kv::Store, retention: Duration) -> Outcomes {
        Outcomes::with_store(Box::new(OutcomeBucket::new(bucket)), retention)
    }
}

/// `expect` and `get` answer a portal that waits: they give up sooner than
/// tenant writes.
pub const WAIT_FOR: Duration = Duration::from_secs(5);
/// `record` holds the only copy of an agent's answer: worth waiting for a
/// failover.
pub const RECORD_FOR: Duration = super::RETRY_FOR;

/// The keys of one request.
pub(crate) struct Keys {
    awaited: String,
    answer: String,
}

pub(crate) fn keys(tenant: &str, request_id: &str) -> Keys {
    let id = URL_SAFE_NO_PAD.encode(request_id);
    Keys {
        awaited: format!("{tenant}.awaited.{id}"),
        answer: format!("{tenant}.answer.{id}"),
    }
}

#[derive(Clone)]
pub(crate) struct OutcomeBucket {
    store: kv::Store,
}

impl OutcomeBucket {
    pub(crate) fn new(store: kv::Store) -> OutcomeBucket {
        OutcomeBucket { store }
    }

    fn name(&self) -> &str {
        &self.store.name
    }

    /// Stores `value` unless the key has one already; whether it did.
    async fn create(&self, key: &str, value: &[u8], window: Duration) -> Result<bool, KvError> {
        let is_final = |e: &kv::CreateError| {
            matches!(
                e.kind(),
                CreateErrorKind::AlreadyExists | CreateErrorKind::InvalidKey
            )
        };
        let created = retry(self.name(), "store an outcome", window, is_final, || {
            self.store.create(key, value.to_vec().into())
        })
        .await?;
        match created {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(failed(self.name(), "store an outcome", e)),
        }
    }

    async fn entry(&self, key: &str, window: Duration) -> Result<Option<kv::Entry>, KvError> {
        let is_final = |e: &kv::EntryError| e.kind() == EntryErrorKind::InvalidKey;
        let entry = retry(self.name(), "read an outcome", window, is_final, || {
            self.store.entry(key)
        })
        .await?
        .map_err(|e| failed(self.name(), "read an outcome", e))?;
        Ok(entry.filter(|e| e.operation == Operation::Put))
    }

    /// Remembers that an answer is awaited: an awaited record naming no
    /// agent only if there is none, one naming the agent in any case (what
    /// the routing found; a put is safe, as the answer is another key). An
    /// answer kept already wins over it (see [`Self::get_at`]). Whether this
    /// call wrote.
    async fn expect_at(&self, keys: &Keys, waiting: &OutcomeRecord) -> Result<bool, KvError> {
        let value = encode_outcome(waiting);
        if waiting.agent_id.is_empty() {
            return self.create(&keys.awaited, &value, WAIT_FOR).await;
        }
        let never_final = |_: &kv::PutError| false;
        retry(
            self.name(),
            "store an outcome",
            WAIT_FOR,
            never_final,
            || self.store.put(&keys.awaited, value.clone().into()),
        )
        .await?
        .map_err(|e| failed(self.name(), "store an outcome", e))?;
        Ok(true)
    }

    /// Removes the awaited marker of a request that, after all, no agent
    /// can have received. A delete marker, which reads as no record.
    async fn forget_at(&self, keys: &Keys) -> Result<(), KvError> {
        self.store
            .delete(&keys.awaited)
            .await
            .map_err(|e| failed(self.name(), "forget an outcome", e))
    }

    /// Keeps an answer unless one is kept already: the first one wins.
    async fn record_at(&self, keys: &Keys, answered: &OutcomeRecord) -> Result<bool, KvError> {
        let value = encode_outcome(answered);
        if self.create(&keys.answer, &value, RECORD_FOR).await? {
            return Ok(true);
        }
        // Ours, if an earlier attempt's answer was lost in a failover.
        let kept = self.entry(&keys.answer, RECORD_FOR).await?;
        Ok(kept.is_some_and(|e| e.value == value))
    }

    /// The answer if one is kept, else the awaited marker; expired or not.
    async fn get_at(&self, keys: &Keys) -> Result<Option<OutcomeRecord>, KvError> {
        for key in [&keys.answer, &keys.awaited] {
            if let Some(outcome) = self
                .entry(key, WAIT_FOR)
                .await?
                .and_then(|e| decode_outcome(&e.value))
            {
                return Ok(Some(outcome));
            }
        }
        Ok(None)
    }
}

#[tonic::async_trait]
impl OutcomeStore for OutcomeBucket {
    async fn expect(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
    ) -> Result<bool, StoreError> {
        Ok(self.expect_at(&keys(tenant, request_id), &record).await?)
    }

    async fn forget(&self, tenant: &str, request_id: &str) -> Result<(), StoreError> {
        Ok(self.forget_at(&keys(tenant, request_id)).await?)
    }

    async fn record(
        &self,
        tenant: &str,
        request_id: &str,
        record: OutcomeRecord,
        admission: Admission,
    ) -> Result<bool, StoreError> {
        let keys = keys(tenant, request_id);
        if admission == Admission::Late {
            // Two reads before a create: only an unsolicited reply pays
            // for them, and the create still decides a race.
            let awaited = self.get_at(&keys).await?;
            if !awaited.is_some_and(|o| o.admits_late(&record.agent_id)) {
                return Ok(false);
            }
        }
        Ok(self.record_at(&keys, &record).await?)
    }

    async fn get(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<OutcomeRecord>, StoreError> {
        Ok(self.get_at(&keys(tenant, request_id)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn keys_are_valid_and_distinct_for_every_request_id() {
        let long = "x".repeat(128);
        let ids = ["r1", "R:1", "a.b", "a-b_c", "...", ":", long.as_str()];
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            let Keys { awaited, answer } = keys("contoso", id);
            for k in [awaited, answer] {
                assert!(is_kv_key(&k), "{id:?} -> {k:?}");
                assert!(k.starts_with("contoso."), "{k}");
                assert!(seen.insert(k), "{id:?} collides");
            }
        }
        // Another tenant, another key: none reaches into another's.
        assert_ne!(keys("a", "r1").answer, keys("b", "r1").answer);
        assert!(!keys("a", "b.answer.r1").answer.starts_with("b."));
    }
}
