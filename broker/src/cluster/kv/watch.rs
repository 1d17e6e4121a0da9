//! Every node keeps all tenants in memory. At start-up it reads the latest
//! record of each from a watch with history (one ordered consumer: no
//! change can slip between loading and watching), then the same watch
//! delivers every change from any node within milliseconds.
//!
//! A watch can fall behind without a word: its consumer lived on a NATS
//! node that died (the client notices only after 10 s of missed
//! heartbeats, or never while it retries on its own), or it was placed on
//! a replica still catching up after a restart. So a check compares, every
//! [`CHECK_EVERY`], the last revision applied with the stream's last
//! sequence (from the stream leader); still behind a moment later, the
//! watch is made again from the revision after the last one applied.
//! Revisions make applying a change twice, or late, harmless.
//!
//! The same check renews this node's [`Lease`] on its view: an answer
//! from a stream leader that a quorum of replicas follows, once the watch
//! has applied up to the sequence it names, confirms that the view holds
//! every change made before the question was asked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream::ClusterInfo;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::KvError;
use super::retry::{RETRY_FOR, failed, retry_all};
use super::tenants::TenantBucket;
use crate::lease::Lease;
use crate::tenants::TenantCache;

/// The server or the client ended a watch.
#[derive(Debug, thiserror::Error)]
#[error("the watch ended")]
struct WatchEnded;

/// Every key of a bucket.
const ALL: &str = ">";
/// How long loading the tenants at start-up may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the watch is checked against the stream. A change must reach
/// every node within a second even when its watch died with a NATS node:
/// a check that finds the watch behind, and still behind `IN_TRANSIT`
/// later, makes it again. The check is one small JetStream API request.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);
/// How long a check waits for the stream's state.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// Ample for a change to travel through a live watch.
const IN_TRANSIT: Duration = Duration::from_millis(100);
/// How long one attempt to make a watch, or to read the stream's state,
/// may take: they hang while a stream elects a leader.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the first attempt to make a watch again may take.
const FIRST_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_RESUBSCRIBE_PAUSE: Duration = Duration::from_secs(2);

/// Fills `cache` with the bucket's tenants. Returns the watch that goes on
/// with the changes after them, and the last revision applied.
pub(crate) async fn load(
    bucket: &TenantBucket,
    cache: &TenantCache,
) -> Result<(kv::Watch, u64), KvError> {
    let name = bucket.name();
    // Where the stream leader is: the watch's consumer may sit on a
    // replica that has not caught up yet, and must reach it.
    let state = retry_all(name, "read the bucket's state", RETRY_FOR, || {
        bucket.store().stream.get_info()
    })
    .await?
    .state;
    let mut watch = retry_all(name, "watch the tenants", RETRY_FOR, || {
        bucket.store().watch_with_history(ALL)
    })
    .await?;
    if state.messages == 0 {
        return Ok((watch, 0));
    }
    let mut last = 0;
    let mut current = false;
    let caught_up = tokio::time::timeout(LOAD_TIMEOUT, async {
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| failed(name, "load the tenants", e))?;
            apply(bucket, cache, &entry);
            last = last.max(entry.revision);
            current |= entry.delta == 0;
            if current && last >= state.last_sequence {
                return Ok(());
            }
        }
        Err(failed(name, "load the tenants", WatchEnded))
    })
    .await;
    match caught_up {
        Ok(done) => done?,
        // The stream's last message may have been purged: what the watch
        // delivered is all there is, and the check keeps watching.
        Err(_) if current => warn!(
            bucket = %name,
            revision = last,
            stream_last = state.last_sequence,
            "the tenants loaded only up to an older revision than the stream's last"
        ),
        Err(_) => {
            return Err(KvError::LoadTimeout {
                bucket: name.to_owned(),
                waited: LOAD_TIMEOUT,
            });
        }
    }
    info!(bucket = %name, tenants = cache.len(), revision = last, "loaded the tenants");
    Ok((watch, last))
}

/// Applies every change `watch` delivers after `last`, until `stop`,
/// telling `lease` what it applied and what the checks confirm.
pub(crate) fn follow(
    bucket: TenantBucket,
    cache: Arc<TenantCache>,
    mut watch: kv::Watch,
    last: u64,
    lease: Arc<Lease>,
    stop: CancellationToken,
) {
    let applied = Arc::new(AtomicU64::new(last));
    let behind = Arc::new(Notify::new());
    tokio::spawn(check(
        bucket.clone(),
        Arc::clone(&applied),
        Arc::clone(&behind),
        Arc::clone(&lease),
        stop.clone(),
    ));
    tokio::spawn(async move {
        loop {
            let why = tokio::select! {
                _ = stop.cancelled() => return,
                _ = behind.notified() => "the watch fell behind the bucket".to_owned(),
                item = watch.next() => match item {
                    Some(Ok(entry)) => {
                        apply(&bucket, &cache, &entry);
                        applied.fetch_max(entry.revision, Ordering::AcqRel);
                        // After the cache: a renewal covers what is in it.
                        lease.applied(entry.revision);
                        continue;
                    }
                    Some(Err(e)) => e.to_string(),
                    None => WatchEnded.to_string(),
                },
            };
            let last = applied.load(Ordering::Acquire);
            warn!(
                bucket = %bucket.name(),
                error = %why,
                from_revision = last + 1,
                "lost the watch on the tenants; watching again"
            );
            match resubscribe(&bucket, last, &stop).await {
                Some(again) => watch = again,
                None => return,
            }
        }
    });
}

/// Tells the follower when it is behind the stream and makes no progress,
/// and `lease` what the stream's leader says.
async fn check(
    bucket: TenantBucket,
    applied: Arc<AtomicU64>,
    behind: Arc<Notify>,
    lease: Arc<Lease>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        // The lease counts from the question: whatever was written before
        // it is in the answer.
        let asked = tokio::time::Instant::now();
        // Short: a request lost in a leader election must not hold up the
        // checks after it.
        let read = tokio::time::timeout(CHECK_TIMEOUT, bucket.store().stream.get_info());
        let stream_last = match read.await {
            Ok(Ok(info)) => match quorum(info.cluster.as_ref()) {
                Ok(()) => info.state.last_sequence,
                Err(why) => {
                    lease.unanswered(why);
                    continue;
                }
            },
            // NATS is failing over (the writes are, too), or out of reach.
            Ok(Err(e)) => {
                lease.unanswered(format!("reading the stream's state failed: {e}"));
                continue;
            }
            Err(_) => {
                lease.unanswered(format!(
                    "the stream's state did not come within {}",
                    humantime::format_duration(CHECK_TIMEOUT)
                ));
                continue;
            }
        };
        lease.answered(asked, stream_last);
        if stream_last <= applied.load(Ordering::Acquire) {
            continue;
        }
        // The change may be on its way through the watch: give it a moment.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(IN_TRANSIT) => {}
        }
        let last = applied.load(Ordering::Acquire);
        if stream_last > last {
            debug!(bucket = %bucket.name(), revision = last, stream_last, "the tenant watch is behind");
            // Only a follower waiting hears it: one busy making a new
            // watch already is doing what this asks.
            behind.notify_waiters();
        }
    }
}

/// A replica the leader has not heard from for this long does not count
/// towards a quorum. Followers answer the leader's heartbeats (every
/// second), so a live one is seen within about a second.
const PEER_SILENCE: Duration = Duration::from_secs(3);

/// Whether `info` comes from a leader that a majority of the stream's
/// replicas follows. A leader cut off from its replicas answers until it
/// notices and steps down (about 10 s), still calling them current; how
/// long ago it last heard from each (`active`) gives it away sooner. A
/// stream of one replica (or a NATS server without a cluster) is its own
/// quorum.
fn quorum(cluster: Option<&ClusterInfo>) -> Result<(), String> {
    let Some(cluster) = cluster else {
        return Ok(());
    };
    if cluster.replicas.is_empty() {
        return Ok(());
    }
    if cluster.leader.is_none() {
        return Err("the tenants stream has no leader".to_owned());
    }
    let members = cluster.replicas.len() + 1;
    let following = 1 + cluster
        .replicas
        .iter()
        .filter(|p| p.current && !p.offline && p.active <= PEER_SILENCE)
        .count();
    if following * 2 > members {
        Ok(())
    } else {
        Err(format!(
            "only {following} of the {members} replicas of the tenants stream are current"
        ))
    }
}

/// A new watch from the revision after `last`; `None` once `stop`.
async fn resubscribe(
    bucket: &TenantBucket,
    last: u64,
    stop: &CancellationToken,
) -> Option<kv::Watch> {
    let mut pause = Duration::from_millis(100);
    // A watch is made in milliseconds once the stream has a leader, but a
    // request made during the election can hang: give up on it early, and
    // wait longer each time in case the cluster is merely slow.
    let mut wait = FIRST_ATTEMPT_TIMEOUT;
    loop {
        let attempt = tokio::time::timeout(wait, async {
            if last == 0 {
                bucket.store().watch_with_history(ALL).await
            } else {
                bucket.store().watch_all_from_revision(last + 1).await
            }
        });
        tokio::select! {
            _ = stop.cancelled() => return None,
            made = attempt => match made {
                Ok(Ok(watch)) => {
                    info!(bucket = %bucket.name(), from_revision = last + 1, "watching the tenants again");
                    return Some(watch);
                }
                // Expected for a few seconds after a NATS node died.
                Ok(Err(e)) => debug!(bucket = %bucket.name(), error = %e, "cannot watch the tenants yet"),
                Err(_) => debug!(bucket = %bucket.name(), "making the tenant watch timed out"),
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_RESUBSCRIBE_PAUSE);
        wait = (wait * 2).min(ATTEMPT_TIMEOUT);
    }
}

/// Applies one change to the cache. A record this node cannot read takes
/// the tenant out of its view rather than leaving an older record in
/// place: that one may hold keys rotated away, or writeback the other nodes
/// see disabled.
fn apply(bucket: &TenantBucket, cache: &TenantCache, entry: &kv::Entry) {
    let record = match entry.operation {
        Operation::Put => match bucket.open(&entry.key, &entry.value) {
            Ok(record) => Some(Arc::new(record)),
            Err(e) => {
                warn!(
                    tenant = %entry.key,
                    revision = entry.revision,
                    error = %e,
                    "skipped a tenant record this node cannot read; the tenant is unavailable here until a readable one is written"
                );
                None
            }
        },
        Operation::Delete | Operation::Purge => None,
    };
    cache.apply(&entry.key, entry.revision, record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::PeerInfo;

    fn peer(current: bool, offline: bool) -> PeerInfo {
        PeerInfo {
            name: "n".into(),
            current,
            offline,
            active: Duration::from_millis(400),
            ..PeerInfo::default()
        }
    }

    fn cluster(leader: bool, replicas: Vec<PeerInfo>) -> ClusterInfo {
        ClusterInfo {
            leader: leader.then(|| "n1".to_owned()),
            replicas,
            ..ClusterInfo::default()
        }
    }

    #[test]
    fn a_leader_confirms_only_with_a_majority_behind_it() {
        // A server without a cluster, and a stream of one replica.
        assert_eq!(quorum(None), Ok(()));
        assert_eq!(quorum(Some(&cluster(true, vec![]))), Ok(()));
        let healthy = cluster(true, vec![peer(true, false), peer(true, false)]);
        assert_eq!(quorum(Some(&healthy)), Ok(()));
        let one_lost = cluster(true, vec![peer(true, false), peer(false, true)]);
        assert_eq!(quorum(Some(&one_lost)), Ok(()));
        // The leader on the minority side of a split, before it steps down.
        let cut_off = cluster(true, vec![peer(false, false), peer(false, true)]);
        assert!(
            quorum(Some(&cut_off))
                .unwrap_err()
                .contains("only 1 of the 3")
        );
        // ... and before it calls them not current: they are silent.
        let silent = PeerInfo {
            active: PEER_SILENCE + Duration::from_millis(1),
            ..peer(true, false)
        };
        let unheard = cluster(true, vec![silent.clone(), silent]);
        assert!(quorum(Some(&unheard)).is_err());
        let electing = cluster(false, vec![peer(true, false), peer(true, false)]);
        assert!(quorum(Some(&electing)).is_err());
        // Five replicas: three must be current.
        let five =
            |current: usize| cluster(true, (0..4).map(|i| peer(i < current, false)).collect());
        assert!(quorum(Some(&five(1))).is_err());
        assert_eq!(quorum(Some(&five(2))), Ok(()));
    }
}
