//! Tenants in memory, backed by the store. Reads come from a concurrent map;
//! every change is committed first and only then made visible, so what
//! callers see is always what survives a crash.
//!
//! Changes go through a [`TenantStore`]: one node commits to its redb
//! [`Store`]; in cluster mode the tenants live in the cluster's tenants
//! bucket ([`crate::cluster::kv::tenants`], which also makes
//! `Tenants::load_cluster`). A change is a compare-and-set there; after a
//! conflict with another node's change it reads again and reapplies. A
//! watch ([`crate::cluster::kv::watch`]) applies every change from any node
//! to this node's map. Each entry of the map keeps the revision it came
//! from, so a late or repeated notification never replaces a newer record,
//! and the writer sees its own change at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use sas::{Key, KeySlot, Right};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::DropGuard;

use crate::error::RelayError;
use crate::lease::{Lapsed, Lease};
use crate::store::{Store, StoreError, TenantKeys, TenantRecord, TenantStore, Written};
use crate::time::now_unix_ms;

/// Compare-and-set conflicts in a row before an update gives up.
const MAX_CONFLICTS: u32 = 20;

pub struct Tenants {
    store: Box<dyn TenantStore>,
    cache: Arc<TenantCache>,
    // Serialises read-modify-write on one node so that concurrent admin
    // calls on one tenant cannot lose each other's changes (across nodes,
    // revisions do that).
    write: Mutex<()>,
    /// Stops following the other nodes' changes when the tenants are
    /// dropped (cluster mode).
    _follow: Option<DropGuard>,
    /// Cluster mode: whether the view is known to be current.
    lease: Option<Arc<Lease>>,
}

impl Tenants {
    pub fn load(store: Store) -> Result<Tenants, StoreError> {
        let cache = TenantCache::default();
        for record in store.load_tenants()? {
            // Revision 0: below every write of this node's.
            cache.apply(&record.name.clone(), 0, Some(Arc::new(record)));
        }
        Ok(Tenants::with_store(
            Box::new(store),
            Arc::new(cache),
            None,
            None,
        ))
    }

    /// Tenants committed to `store`, seen through `cache`, which the
    /// caller filled (and, with `follow`, keeps up to date with the
    /// changes of other writers, confirming it through `lease`).
    pub(crate) fn with_store(
        store: Box<dyn TenantStore>,
        cache: Arc<TenantCache>,
        follow: Option<DropGuard>,
        lease: Option<Arc<Lease>>,
    ) -> Tenants {
        Tenants {
            store,
            cache,
            write: Mutex::new(()),
            _follow: follow,
            lease,
        }
    }

    /// Whether this node may act on its view of the tenants now: always
    /// on one node (its store is the truth); in a cluster, while the lease
    /// holds (see [`crate::lease`]).
    pub fn current(&self) -> Result<(), Lapsed> {
        self.lease.as_ref().map_or(Ok(()), |l| l.check())
    }

    /// [`Tenants::current`] as the error a request is refused with.
    pub fn require_current(&self) -> Result<(), RelayError> {
        self.current().map_err(RelayError::StateUnconfirmed)
    }

    pub fn get(&self, name: &str) -> Option<Arc<TenantRecord>> {
        self.cache.get(name)
    }

    pub fn require(&self, name: &str) -> Result<Arc<TenantRecord>, RelayError> {
        self.get(name)
            .ok_or_else(|| RelayError::UnknownTenant(name.to_owned()))
    }

    /// Every tenant, sorted by name.
    pub fn all(&self) -> Vec<Arc<TenantRecord>> {
        self.cache.all()
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Changes as this node sees them: the value counts the changes applied
    /// to its view, its own and (in cluster mode) the other nodes'.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.cache.changes.subscribe()
    }

    /// Runs one change within the store's bound, if it has one.
    async fn bounded<T>(
        &self,
        name: &str,
        change: impl Future<Output = Result<T, RelayError>>,
    ) -> Result<T, RelayError> {
        let Some(bound) = self.store.write_bound() else {
            return change.await;
        };
        match tokio::time::timeout(bound, change).await {
            Ok(done) => done,
            Err(_) => Err(StoreError::WriteTimedOut {
                place: self.store.place(name),
                bound,
            }
            .into()),
        }
    }

    pub async fn create(
        &self,
        name: &str,
        connector_name: Option<String>,
        writeback_enabled: bool,
    ) -> Result<Arc<TenantRecord>, RelayError> {
        if !proto::names::is_valid_tenant(name) {
            return Err(RelayError::InvalidTenantName);
        }
        self.bounded(
            name,
            self.create_now(name, connector_name, writeback_enabled),
        )
        .await
    }

    async fn create_now(
        &self,
        name: &str,
        connector_name: Option<String>,
        writeback_enabled: bool,
    ) -> Result<Arc<TenantRecord>, RelayError> {
        let _guard = self.write.lock().await;
        let now = now_unix_ms();
        let keys = TenantKeys::generate().map_err(|_| StoreError::Random)?;
        let record = TenantRecord {
            name: name.to_owned(),
            connector_name: connector_name.unwrap_or_else(|| format!("{name} - AAD")),
            writeback_enabled,
            created_unix_ms: now,
            modified_unix_ms: now,
            keys,
            revoked_agents: BTreeSet::new(),
            agent_keys: Vec::new(),
        };
        for attempt in 0..MAX_CONFLICTS {
            // The store decides: this node's view may lag.
            let current = self.store.read(name).await?;
            if current.exists() {
                return Err(RelayError::TenantExists(name.to_owned()));
            }
            match self.store.put(&record, &current).await? {
                Written::At(revision) => return Ok(self.cache.publish(record, revision)),
                Written::Conflict => conflict_pause(attempt).await,
            }
        }
        Err(self.contended(name))
    }

    /// Applies `change` to a copy of the tenant, commits it, then publishes
    /// it. A conflict with another node's change runs a fresh clone of
    /// `change` on the newer record, hence `Clone`.
    pub async fn update<F>(&self, name: &str, change: F) -> Result<Arc<TenantRecord>, RelayError>
    where
        F: FnOnce(&mut TenantRecord) -> Result<(), RelayError> + Clone,
    {
        self.bounded(name, self.update_now(name, change)).await
    }

    async fn update_now<F>(&self, name: &str, change: F) -> Result<Arc<TenantRecord>, RelayError>
    where
        F: FnOnce(&mut TenantRecord) -> Result<(), RelayError> + Clone,
    {
        let _guard = self.write.lock().await;
        for attempt in 0..MAX_CONFLICTS {
            let mut current = self.store.read(name).await?;
            let Some(mut record) = current.take_record()? else {
                return Err(RelayError::UnknownTenant(name.to_owned()));
            };
            (change.clone())(&mut record)?;
            record.modified_unix_ms = now_unix_ms();
            match self.store.put(&record, &current).await? {
                Written::At(revision) => return Ok(self.cache.publish(record, revision)),
                Written::Conflict => conflict_pause(attempt).await,
            }
        }
        Err(self.contended(name))
    }

    pub async fn set_writeback(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Arc<TenantRecord>, RelayError> {
        self.update(name, move |r| {
            r.writeback_enabled = enabled;
            Ok(())
        })
        .await
    }

    /// Replaces one key with a fresh one and returns it.
    pub async fn rotate_key(
        &self,
        name: &str,
        right: Right,
        slot: KeySlot,
    ) -> Result<Key, RelayError> {
        let fresh = Key::generate().map_err(|_| StoreError::Random)?;
        let installed = fresh.clone();
        self.update(name, move |r| {
            let pair = r
                .keys
                .pair_mut(right)
                .ok_or(RelayError::InvalidKeySelector(
                    "the operator key is not a tenant key",
                ))?;
            *pair.slot_mut(slot) = installed;
            Ok(())
        })
        .await?;
        Ok(fresh)
    }

    pub async fn delete(&self, name: &str) -> Result<(), RelayError> {
        self.bounded(name, self.delete_now(name)).await
    }

    async fn delete_now(&self, name: &str) -> Result<(), RelayError> {
        let _guard = self.write.lock().await;
        for attempt in 0..MAX_CONFLICTS {
            // A record this node cannot read can still be deleted: that is
            // how an operator clears it.
            let current = self.store.read(name).await?;
            if !current.exists() {
                return Err(RelayError::UnknownTenant(name.to_owned()));
            }
            match self.store.delete(name, &current).await? {
                Written::At(revision) => {
                    self.cache.apply(name, revision, None);
                    return Ok(());
                }
                Written::Conflict => conflict_pause(attempt).await,
            }
        }
        Err(self.contended(name))
    }

    fn contended(&self, name: &str) -> RelayError {
        StoreError::Contended {
            place: self.store.place(name),
            attempts: MAX_CONFLICTS,
        }
        .into()
    }
}

/// A short random pause after a conflict, growing with `attempt`: nodes
/// retrying in step would conflict again.
async fn conflict_pause(attempt: u32) {
    let most = 5 * u64::from(attempt + 1);
    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=most))).await;
}

/// This node's view of the tenants.
pub(crate) struct TenantCache {
    slots: DashMap<String, Slot>,
    changes: watch::Sender<u64>,
}

/// A tenant's latest known state. `None` once deleted: the revision of the
/// deletion must outlive the record, or an older record arriving late
/// would bring the tenant back.
struct Slot {
    revision: u64,
    record: Option<Arc<TenantRecord>>,
}

impl Default for TenantCache {
    fn default() -> TenantCache {
        TenantCache {
            slots: DashMap::new(),
            changes: watch::channel(0).0,
        }
    }
}

impl TenantCache {
    pub(crate) fn get(&self, name: &str) -> Option<Arc<TenantRecord>> {
        self.slots.get(name).and_then(|s| s.record.clone())
    }

    fn all(&self) -> Vec<Arc<TenantRecord>> {
        let mut all: Vec<_> = self.slots.iter().filter_map(|s| s.record.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.record.is_some()).count()
    }

    /// Takes `name`'s state at `revision` unless this node knows a later
    /// one; whether it did.
    pub(crate) fn apply(
        &self,
        name: &str,
        revision: u64,
        record: Option<Arc<TenantRecord>>,
    ) -> bool {
        let slot = Slot { revision, record };
        match self.slots.entry(name.to_owned()) {
            Entry::Occupied(mut held) if held.get().revision < revision => {
                held.insert(slot);
            }
            Entry::Occupied(_) => return false,
            Entry::Vacant(empty) => {
                empty.insert(slot);
            }
        }
        self.changes.send_modify(|n| *n += 1);
        true
    }

    /// A change this node wrote at `revision`, visible at once.
    fn publish(&self, record: TenantRecord, revision: u64) -> Arc<TenantRecord> {
        let record = Arc::new(record);
        let name = record.name.clone();
        if !self.apply(&name, revision, Some(Arc::clone(&record))) {
            // The watch was faster, and has a later change already.
            return self.get(&name).unwrap_or(record);
        }
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, connector: &str) -> Arc<TenantRecord> {
        Arc::new(TenantRecord {
            name: name.to_owned(),
            connector_name: connector.to_owned(),
            writeback_enabled: true,
            created_unix_ms: 1,
            modified_unix_ms: 1,
            keys: TenantKeys::generate().unwrap(),
            revoked_agents: BTreeSet::new(),
            agent_keys: Vec::new(),
        })
    }

    #[test]
    fn the_latest_revision_wins_whatever_the_order() {
        let cache = TenantCache::default();
        let changes = cache.changes.subscribe();
        assert!(cache.apply("a", 5, Some(record("a", "v5"))));
        assert!(!cache.apply("a", 3, Some(record("a", "v3"))));
        assert!(!cache.apply("a", 5, Some(record("a", "v5 again"))));
        assert_eq!(cache.get("a").unwrap().connector_name, "v5");
        assert!(cache.apply("a", 7, Some(record("a", "v7"))));
        assert_eq!(cache.get("a").unwrap().connector_name, "v7");
        assert_eq!(*changes.borrow(), 2);
    }

    #[test]
    fn a_deletion_is_not_undone_by_an_older_record() {
        let cache = TenantCache::default();
        cache.apply("a", 4, Some(record("a", "v4")));
        cache.apply("b", 5, Some(record("b", "v5")));
        assert!(cache.apply("a", 6, None));
        assert!(!cache.apply("a", 4, Some(record("a", "v4"))));
        assert!(cache.get("a").is_none());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.all().len(), 1);
        // Created again later.
        assert!(cache.apply("a", 9, Some(record("a", "v9"))));
        assert_eq!(cache.len(), 2);
        let names: Vec<_> = cache.all().iter().map(|r| r.name.clone()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_writer_never_steps_back_behind_its_watch() {
        let cache = TenantCache::default();
        // The watch delivered another node's later change first.
        cache.apply("a", 8, Some(record("a", "theirs")));
        let shown = cache.publish((*record("a", "mine")).clone(), 7);
        assert_eq!(shown.connector_name, "theirs");
        let shown = cache.publish((*record("a", "mine")).clone(), 9);
        assert_eq!(shown.connector_name, "mine");
    }

    /// A shared store whose NATS has no quorum: every step hangs.
    struct Unreachable;

    #[tonic::async_trait]
    impl TenantStore for Unreachable {
        fn place(&self, tenant: &str) -> String {
            format!("{tenant:?} in nowhere")
        }
        fn write_bound(&self) -> Option<Duration> {
            Some(Duration::from_secs(15))
        }
        async fn read(&self, _: &str) -> Result<crate::store::Current, StoreError> {
            std::future::pending().await
        }
        async fn put(
            &self,
            _: &TenantRecord,
            _: &crate::store::Current,
        ) -> Result<Written, StoreError> {
            std::future::pending().await
        }
        async fn delete(&self, _: &str, _: &crate::store::Current) -> Result<Written, StoreError> {
            std::future::pending().await
        }
    }

    /// A change, its reads and retries together, is refused within the
    /// store's bound (issue 19: minority-side writes took 14-20+ s).
    #[tokio::test(start_paused = true)]
    async fn a_shared_store_change_is_refused_within_its_bound() {
        let cache = Arc::new(TenantCache::default());
        cache.apply("a", 1, Some(record("a", "v1")));
        let tenants = Tenants::with_store(Box::new(Unreachable), cache, None, None);
        let began = tokio::time::Instant::now();
        let refused = tenants.set_writeback("a", false).await.unwrap_err();
        assert_eq!(began.elapsed(), Duration::from_secs(15));
        assert_eq!(refused.reason(), proto::Reason::StoreUnavailable);
        let shown = std::error::Error::source(&refused).unwrap().to_string();
        assert!(shown.contains("did not finish within 15s"), "{shown}");
        for refused in [
            tenants.create("b", None, true).await.unwrap_err(),
            tenants.delete("a").await.unwrap_err(),
        ] {
            assert_eq!(refused.reason(), proto::Reason::StoreUnavailable);
        }
        assert!(tenants.require("a").unwrap().writeback_enabled);
    }

    #[tokio::test]
    async fn local_tenants_keep_working_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("b.redb"), crate::sealing::test_key()).unwrap();
        let tenants = Tenants::load(store.clone()).unwrap();
        let mut changes = tenants.changes();
        tenants.create("a", None, true).await.unwrap();
        assert!(matches!(
            tenants.create("a", None, true).await,
            Err(RelayError::TenantExists(_))
        ));
        tenants.set_writeback("a", false).await.unwrap();
        let key = tenants
            .rotate_key("a", Right::Send, KeySlot::Secondary)
            .await
            .unwrap();
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let reloaded = Tenants::load(store.clone()).unwrap();
        let a = reloaded.require("a").unwrap();
        assert!(!a.writeback_enabled);
        assert_eq!(a.keys.send.secondary, key);
        tenants.delete("a").await.unwrap();
        assert!(tenants.is_empty());
        assert!(changes.has_changed().unwrap());
        assert!(Tenants::load(store).unwrap().is_empty());
        assert!(matches!(
            tenants.delete("a").await,
            Err(RelayError::UnknownTenant(_))
        ));
    }

    /// One node orders its own changes by the store's revisions: a tenant
    /// deleted and created again is there, with its new keys, and a tenant
    /// loaded at start is changed like one created since.
    #[tokio::test]
    async fn a_tenant_deleted_and_created_again_is_back_on_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("b.redb"), crate::sealing::test_key()).unwrap();
        Tenants::load(store.clone())
            .unwrap()
            .create("loaded", None, true)
            .await
            .unwrap();
        let tenants = Tenants::load(store.clone()).unwrap();
        tenants.set_writeback("loaded", false).await.unwrap();
        assert!(!tenants.require("loaded").unwrap().writeback_enabled);
        let first = tenants.create("a", None, true).await.unwrap();
        tenants.delete("a").await.unwrap();
        assert!(tenants.get("a").is_none());
        let again = tenants.create("a", None, true).await.unwrap();
        let seen = tenants.require("a").unwrap();
        assert_eq!(seen.keys.send.primary, again.keys.send.primary);
        assert_ne!(seen.keys.send.primary, first.keys.send.primary);
        assert_eq!(tenants.len(), 2);
        assert_eq!(Tenants::load(store).unwrap().len(), 2);
    }
}
