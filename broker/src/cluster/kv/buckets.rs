//! Opening the cluster's buckets, creating them on the first start.
//!
//! A bucket is the stream `KV_<bucket>` (subjects `$KV.<bucket>.>`) with
//! the settings async-nats' `create_key_value` would give it; the stream is
//! created directly because `create_key_value` first reads the account
//! info, which async-nats 0.46 cannot parse from nats-server 2.9 (it lacks
//! `reserved_memory`). Nodes starting together all try: the first creates
//! it, the others find it exists and open it.

use std::time::Duration;

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, kv, stream};
use tracing::{info, warn};

use super::KvError;
use super::retry::{RETRY_FOR, retry};
use crate::config::ClusterConfig;

/// The cluster's buckets.
#[derive(Clone)]
pub struct Buckets {
    /// Tenant records, sealed with the storage key, keyed by tenant name.
    pub tenants: kv::Store,
    /// Late outcomes, kept `outcome_retention` (the stream's max age).
    pub outcomes: kv::Store,
    /// The operator key (sealed) and the nodes' announcements.
    pub meta: kv::Store,
    // Tenant writes carry conditions `kv::Store` cannot express (see
    // `cas`); they are published through this.
    jetstream: jetstream::Context,
}

impl Buckets {
    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }
}

struct Spec {
    name: String,
    description: &'static str,
    max_age: Duration,
    replicas: usize,
}

/// Opens (creating if needed) `<prefix>_tenants`, `<prefix>_outcomes` and
/// `<prefix>_meta` with `kv_replicas` copies each; outcomes expire after
/// `outcome_retention`. Retried for [`RETRY_FOR`] each while JetStream has
/// no leader (a cluster still starting).
pub async fn open_buckets(
    js: &jetstream::Context,
    config: &ClusterConfig,
    outcome_retention: Duration,
) -> Result<Buckets, KvError> {
    let spec = |what: &str, description, max_age| Spec {
        name: format!("{}_{what}", config.subject_prefix),
        description,
        max_age,
        replicas: config.kv_replicas,
    };
    let tenants = open(
        js,
        spec(
            "tenants",
            "relay tenants, sealed with the cluster storage key",
            Duration::ZERO,
        ),
    );
    let outcomes = open(
        js,
        spec(
            "outcomes",
            "relay late outcomes, sealed by the agents",
            outcome_retention,
        ),
    );
    let meta = open(
        js,
        spec(
            "meta",
            "relay operator key (sealed) and node announcements",
            Duration::ZERO,
        ),
    );
    let (tenants, outcomes, meta) = tokio::try_join!(tenants, outcomes, meta)?;
    Ok(Buckets {
        tenants,
        outcomes,
        meta,
        jetstream: js.clone(),
    })
}

fn stream_config(spec: &Spec) -> stream::Config {
    stream::Config {
        name: format!("KV_{}", spec.name),
        description: Some(spec.description.to_owned()),
        subjects: vec![format!("$KV.{}.>", spec.name)],
        // Only the latest value of a key is of use; older tenant records
        // hold keys since rotated away.
        max_messages_per_subject: 1,
        max_age: spec.max_age,
        max_bytes: -1,
        max_message_size: -1,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: spec.replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    }
}

async fn open(js: &jetstream::Context, spec: Spec) -> Result<kv::Store, KvError> {
    let config = stream_config(&spec);
    let created = retry(&spec.name, "create the bucket", RETRY_FOR, is_final, || {
        js.create_stream(config.clone())
    })
    .await?;
    match created {
        Ok(_) => {}
        Err(e) if exists(&e) => {}
        Err(source) => {
            return Err(KvError::CreateBucket {
                bucket: spec.name,
                replicas: spec.replicas,
                source,
            });
        }
    }
    let store = retry(
        &spec.name,
        "open the bucket",
        RETRY_FOR,
        |_| false,
        || js.get_key_value(spec.name.clone()),
    )
    .await?
    .map_err(|source| KvError::OpenBucket {
        bucket: spec.name.clone(),
        source,
    })?;
    let found = &store.stream.cached_info().config;
    if found.num_replicas != spec.replicas || found.max_age != spec.max_age {
        // Another node created it with other settings, or they changed:
        // JetStream keeps the first; `nats stream edit` changes them.
        warn!(
            bucket = %spec.name,
            replicas = found.num_replicas,
            max_age = ?found.max_age,
            configured_replicas = spec.replicas,
            configured_max_age = ?spec.max_age,
            "the bucket exists with other settings than configured; keeping them"
        );
    }
    info!(bucket = %spec.name, replicas = found.num_replicas, "opened the key-value bucket");
    Ok(store)
}

type CreateError = async_nats::jetstream::context::CreateStreamError;

fn jetstream_code(e: &CreateError) -> Option<ErrorCode> {
    match e.kind() {
        CreateStreamErrorKind::JetStream(js) => Some(js.error_code()),
        _ => None,
    }
}

/// Another node created it first (or this node, on an earlier attempt
/// whose answer was lost).
fn exists(e: &CreateError) -> bool {
    jetstream_code(e) == Some(ErrorCode::STREAM_NAME_EXIST)
}

/// Errors no retry can mend: the settings themselves.
fn is_final(e: &CreateError) -> bool {
    exists(e)
        || matches!(
            e.kind(),
            CreateStreamErrorKind::EmptyStreamName
                | CreateStreamErrorKind::InvalidStreamName
                | CreateStreamErrorKind::DomainAndExternalSet
        )
        || matches!(
            jetstream_code(e),
            Some(ErrorCode::STREAM_INVALID_CONFIG | ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED)
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_streams_as_key_value_clients_expect() {
        let config = stream_config(&Spec {
            name: "relay_outcomes".into(),
            description: "d",
            max_age: Duration::from_secs(86_400),
            replicas: 3,
        });
        assert_eq!(config.name, "KV_relay_outcomes");
        assert_eq!(config.subjects, ["$KV.relay_outcomes.>"]);
        assert_eq!(config.max_messages_per_subject, 1);
        assert_eq!(config.max_age, Duration::from_secs(86_400));
        assert_eq!(config.num_replicas, 3);
        assert!(config.allow_rollup && config.deny_delete && config.allow_direct);
        assert_eq!(config.discard, stream::DiscardPolicy::New);
    }
}
