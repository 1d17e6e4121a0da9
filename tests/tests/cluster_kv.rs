//! The cluster's shared configuration (issue 9) against a real three-node
//! NATS cluster: the broker library's buckets, tenants, outcomes and
//! operator key, each "node" a NATS client pinned to one NATS server.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use broker::cluster::kv::{
    Buckets, KvError, RETRY_FOR, RecordError, converge_operator_key, open_buckets,
};
use broker::cluster::storage_key::{StorageKey, UnsealError};
use broker::config::ClusterConfig;
use broker::error::RelayError;
use broker::outcomes::{Admission, Outcomes, StoredAnswer};
use broker::store::StoreError;
use broker::tenants::Tenants;
use sas::{Key, KeySlot, Right};
use tests::nats::NatsCluster;
use tokio_util::sync::CancellationToken;

/// The acceptance bound: a change through one node is seen by the others.
const SEEN_WITHIN: Duration = Duration::from_secs(1);
/// After a NATS node is killed: a stream elects a new leader in seconds,
/// and a watch whose consumer lived on the dead node is remade once found
/// behind (see `broker::cluster::kv::watch`).
const FAILOVER: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(600);

fn config(prefix: &str) -> ClusterConfig {
    serde_json::from_value(serde_json::json!({
        "node_name": "test",
        "nats_urls": ["nats://127.0.0.1:4222"],
        "storage_key_file": "unused",
        "kv_replicas": 3,
        "subject_prefix": prefix,
    }))
    .expect("cluster config")
}

/// One broker node's view of the cluster's configuration.
struct Node {
    buckets: Buckets,
    tenants: Tenants,
}

async fn buckets(nats: &NatsCluster, i: usize, prefix: &str) -> Buckets {
    let js = jetstream::new(nats.connect(i).await);
    open_buckets(&js, &config(prefix), RETENTION)
        .await
        .unwrap_or_else(|e| panic!("open the buckets through NATS node {i}: {e}"))
}

/// The broker's default `state_lease` (broker/src/lease.rs).
const LEASE: Duration = Duration::from_secs(10);

async fn node(
    nats: &NatsCluster,
    i: usize,
    key: &Arc<StorageKey>,
    stop: &CancellationToken,
) -> Node {
    let buckets = buckets(nats, i, "relay").await;
    let tenants = Tenants::load_cluster(&buckets, Arc::clone(key), LEASE, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("load the tenants through NATS node {i}: {e}"));
    Node { buckets, tenants }
}

/// Waits, on the node's change notifications, until `holds`; how long it
/// took.
async fn until(
    tenants: &Tenants,
    within: Duration,
    what: &str,
    holds: impl Fn(&Tenants) -> bool,
) -> Duration {
    let began = Instant::now();
    let mut changes = tenants.changes();
    tokio::time::timeout(within, changes.wait_for(|_| holds(tenants)))
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {within:?}"))
        .expect("the node's view is alive");
    began.elapsed()
}

fn writeback(tenants: &Tenants, name: &str) -> Option<bool> {
    tenants.get(name).map(|r| r.writeback_enabled)
}

fn all_keys(tenants: &Tenants) -> Vec<Key> {
    tenants
        .all()
        .iter()
        .flat_map(|r| {
            let k = &r.keys;
            [&k.listen, &k.send, &k.manage]
                .into_iter()
                .flat_map(|p| [p.primary.clone(), p.secondary.clone()])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_shared_and_every_node_sees_a_change_within_a_second() {
    let nats = NatsCluster::start(3).await;
    let key = Arc::new(StorageKey::generate().unwrap());
    let stop = CancellationToken::new();
    // Three nodes start at once: one creates each bucket, the others open it.
    let (a, b, c) = tokio::join!(
        node(&nats, 0, &key, &stop),
        node(&nats, 1, &key, &stop),
        node(&nats, 2, &key, &stop)
    );
    let info = a.buckets.tenants.stream.get_info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let mut secrets = Vec::new();

    let began = Instant::now();
    let created = a.tenants.create("contoso", None, true).await.unwrap();
    let wrote = began.elapsed();
    let took = until(&c.tenants, SEEN_WITHIN, "creation seen on C", |t| {
        t.get("contoso").is_some()
    })
    .await;
    eprintln!("tenant created through A in {wrote:?}, seen on C {took:?} later");
    secrets.extend(all_keys(&c.tenants));
    assert_eq!(
        c.tenants.require("contoso").unwrap().keys.send.primary,
        created.keys.send.primary
    );

    let began = Instant::now();
    a.tenants.set_writeback("contoso", false).await.unwrap();
    let wrote = began.elapsed();
    // The writer sees its own change at once.
    assert_eq!(writeback(&a.tenants, "contoso"), Some(false));
    let took = until(&c.tenants, SEEN_WITHIN, "disabling seen on C", |t| {
        writeback(t, "contoso") == Some(false)
    })
    .await;
    eprintln!("tenant disabled through A in {wrote:?}, seen on C {took:?} later");

    // The three nodes rotate different keys of one tenant at once: no
    // change is lost, and every node ends up with all three.
    for round in 0..5 {
        let (listen, manage, send) = tokio::join!(
            a.tenants
                .rotate_key("contoso", Right::Listen, KeySlot::Primary),
            b.tenants
                .rotate_key("contoso", Right::Manage, KeySlot::Secondary),
            c.tenants
                .rotate_key("contoso", Right::Send, KeySlot::Secondary)
        );
        let (listen, manage, send) = (listen.unwrap(), manage.unwrap(), send.unwrap());
        for (name, n) in [("A", &a), ("B", &b), ("C", &c)] {
            let what = format!("round {round}: all three rotations on {name}");
            until(&n.tenants, SEEN_WITHIN, &what, |t| {
                t.get("contoso").is_some_and(|r| {
                    r.keys.listen.primary == listen
                        && r.keys.manage.secondary == manage
                        && r.keys.send.secondary == send
                })
            })
            .await;
        }
        secrets.extend([listen, manage, send]);
    }
    assert_eq!(writeback(&b.tenants, "contoso"), Some(false));

    // Two nodes create the same tenant at once: exactly one wins, both
    // for a new name and for one deleted before.
    race_to_create(&[&a, &b, &c], "fabrikam").await;
    a.tenants.delete("fabrikam").await.unwrap();
    race_to_create(&[&a, &b, &c], "fabrikam").await;
    // A change racing a deletion does not bring the tenant back.
    let (changed, deleted) = tokio::join!(
        a.tenants.set_writeback("fabrikam", false),
        c.tenants.delete("fabrikam")
    );
    deleted.unwrap();
    assert!(
        matches!(changed, Ok(_) | Err(RelayError::UnknownTenant(_))),
        "{changed:?}"
    );
    for n in [&a, &b, &c] {
        until(&n.tenants, SEEN_WITHIN, "the deletion", |t| {
            t.get("fabrikam").is_none()
        })
        .await;
    }
    race_to_create(&[&a, &b, &c], "fabrikam").await;

    // Deleted through A, gone everywhere; created again through C.
    secrets.extend(all_keys(&a.tenants));
    a.tenants.delete("contoso").await.unwrap();
    assert!(a.tenants.get("contoso").is_none());
    until(&c.tenants, SEEN_WITHIN, "deletion seen on C", |t| {
        t.get("contoso").is_none()
    })
    .await;
    assert!(matches!(
        c.tenants.delete("contoso").await,
        Err(RelayError::UnknownTenant(_))
    ));
    assert!(matches!(
        c.tenants.set_writeback("contoso", true).await,
        Err(RelayError::UnknownTenant(_))
    ));
    let again = c.tenants.create("contoso", None, true).await.unwrap();
    assert!(again.writeback_enabled);
    until(&a.tenants, SEEN_WITHIN, "re-creation seen on A", |t| {
        t.get("contoso")
            .is_some_and(|r| r.keys.manage.primary == again.keys.manage.primary)
    })
    .await;

    // A node starting now loads what the others made.
    let late = node(&nats, 1, &key, &stop).await;
    assert_eq!(late.tenants.len(), 2);
    assert_eq!(
        late.tenants.require("contoso").unwrap().keys.manage.primary,
        again.keys.manage.primary
    );
    secrets.extend(all_keys(&late.tenants));

    assert_no_secret_on_disk(&nats, &secrets, "contoso").await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_node_cannot_read_are_skipped_not_fatal() {
    let nats = NatsCluster::start(3).await;
    let key = Arc::new(StorageKey::generate().unwrap());
    let stop = CancellationToken::new();
    let a = node(&nats, 0, &key, &stop).await;
    let c = node(&nats, 2, &key, &stop).await;
    a.tenants.create("contoso", None, true).await.unwrap();
    a.tenants.create("tailspin", None, true).await.unwrap();
    until(&c.tenants, SEEN_WITHIN, "tenants on C", |t| t.len() == 2).await;

    // Garbage, a record sealed with another storage key (a node with the
    // wrong storage_key_file), and a valid tenant overwritten with garbage.
    let raw = &a.buckets.tenants;
    raw.put("mallory", "not sealed".into()).await.unwrap();
    let stranger = Tenants::load_cluster(
        &a.buckets,
        Arc::new(StorageKey::generate().unwrap()),
        LEASE,
        stop.clone(),
    )
    .await
    .expect("a node with another storage key still starts");
    assert!(stranger.get("contoso").is_none(), "it cannot read them");
    stranger.create("eve", None, true).await.unwrap();
    raw.put("tailspin", "not sealed either".into())
        .await
        .unwrap();
    // The watch is ordered: once this is seen, so were the others.
    a.tenants.create("sentinel", None, true).await.unwrap();
    until(&c.tenants, SEEN_WITHIN, "sentinel on C", |t| {
        t.get("sentinel").is_some()
    })
    .await;

    for name in ["mallory", "eve", "tailspin"] {
        assert!(c.tenants.get(name).is_none(), "{name} must be skipped");
    }
    // The tenant whose record turned unreadable is unavailable rather than
    // served with its older record.
    assert!(c.tenants.get("tailspin").is_none());
    assert!(c.tenants.get("contoso").is_some());
    // Writing to an unreadable tenant fails with a store error naming it.
    let err = c.tenants.set_writeback("eve", false).await.unwrap_err();
    let Some(store) = StoreError::of(&err) else {
        panic!("{err:?}")
    };
    // Backend-neutral: the bucket's error is the store error's source.
    let StoreError::Shared(shared) = store else {
        panic!("{store:?}")
    };
    let Some(kv) = shared.downcast_ref::<KvError>() else {
        panic!("{shared:?}")
    };
    assert!(
        matches!(
            kv,
            KvError::Unreadable {
                source: RecordError::Sealed(UnsealError::WrongKey { .. }),
                ..
            }
        ),
        "{kv}"
    );
    assert!(kv.to_string().contains("\"eve\""), "{kv}");
    // A node loading now skips them the same way.
    let late = node(&nats, 1, &key, &stop).await;
    let names: Vec<_> = late.tenants.all().iter().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["contoso", "sentinel"]);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_key_converges_and_outcomes_cross_nodes() {
    let nats = NatsCluster::start(3).await;
    let key = Arc::new(StorageKey::generate().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);

    // Three nodes start at once with no key file: one key for all.
    let (m0, m1, m2) = tokio::join!(
        buckets(&nats, 0, "race"),
        buckets(&nats, 1, "race"),
        buckets(&nats, 2, "race")
    );
    let files = [path("n0.key"), path("n1.key"), path("n2.key")];
    let (k0, k1, k2) = tokio::join!(
        converge_operator_key(&m0.meta, &key, &files[0]),
        converge_operator_key(&m1.meta, &key, &files[1]),
        converge_operator_key(&m2.meta, &key, &files[2])
    );
    let (k0, k1, k2) = (k0.unwrap(), k1.unwrap(), k2.unwrap());
    assert!(k0 == k1 && k1 == k2, "three nodes, three operator keys");
    for name in ["n0.key", "n1.key", "n2.key"] {
        assert_key_file(&path(name), &k0);
    }
    // Starting again changes nothing.
    assert_eq!(
        converge_operator_key(&m1.meta, &key, &path("n1.key"))
            .await
            .unwrap(),
        k0
    );

    // A single node turned into a cluster keeps its operator key, and the
    // nodes added later take it, replacing a key file of their own.
    let (u0, u1) = tokio::join!(buckets(&nats, 0, "upgrade"), buckets(&nats, 1, "upgrade"));
    let single = Key::generate().unwrap();
    std::fs::write(
        path("single.key"),
        format!("{}\n", single.to_base64().as_str()),
    )
    .unwrap();
    let kept = converge_operator_key(&u0.meta, &key, &path("single.key"))
        .await
        .unwrap();
    assert_eq!(kept, single);
    std::fs::write(path("added.key"), format!("{}\n", k0.to_base64().as_str())).unwrap();
    let taken = converge_operator_key(&u1.meta, &key, &path("added.key"))
        .await
        .unwrap();
    assert_eq!(taken, single);
    assert_key_file(&path("added.key"), &single);

    // A node with another storage key refuses to start.
    let wrong = StorageKey::generate().unwrap();
    let err = converge_operator_key(&u1.meta, &wrong, &path("wrong.key"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            KvError::Unreadable {
                source: RecordError::Sealed(UnsealError::WrongKey { .. }),
                ..
            }
        ),
        "{err}"
    );
    assert!(!path("wrong.key").exists());

    // Late outcomes: expected on one node, posted on another, fetched on a
    // third; only the agent it was awaited from may post it; the first
    // answer wins.
    let a = Outcomes::cluster(m0.outcomes.clone(), RETENTION);
    let b = Outcomes::cluster(m1.outcomes.clone(), RETENTION);
    let c = Outcomes::cluster(m2.outcomes.clone(), RETENTION);
    a.expect("contoso", "req:1", "dc01", true).await.unwrap();
    let waiting = b.get("contoso", "req:1").await.unwrap().expect("awaited");
    assert_eq!((waiting.agent_id.as_str(), waiting.answer), ("dc01", None));
    let envelope = |b: u8| StoredAnswer::Envelope(vec![b]);
    assert!(
        !c.record("contoso", "req:1", "dc02", envelope(6), Admission::Late)
            .await
            .unwrap()
    );
    assert!(
        c.record("contoso", "req:1", "dc01", envelope(7), Admission::Late)
            .await
            .unwrap()
    );
    assert!(
        !a.record("contoso", "req:1", "dc02", envelope(8), Admission::Relayed)
            .await
            .unwrap()
    );
    a.expect("contoso", "req:1", "dc01", true).await.unwrap();
    let got = b.get("contoso", "req:1").await.unwrap().expect("answered");
    assert_eq!(got.answer, Some(StoredAnswer::Envelope(vec![7])));
    assert_eq!(got.agent_id, "dc01");
    // Posted by an agent with nobody waiting: not kept. Answered through
    // the broker: kept. Another tenant sees none of it.
    let error = StoredAnswer::Error {
        code: 3,
        refusal: 12,
        message: "envelope already seen".into(),
    };
    assert!(
        !b.record("contoso", "req.2", "dc01", error.clone(), Admission::Late)
            .await
            .unwrap()
    );
    assert_eq!(c.get("contoso", "req.2").await.unwrap(), None);
    assert!(
        b.record("contoso", "req.2", "dc01", error, Admission::Relayed)
            .await
            .unwrap()
    );
    // The buckets allow direct gets, which a follower may serve a moment
    // behind the leader: read through c until the record arrives.
    let began = Instant::now();
    let seen = loop {
        let got = c
            .get("contoso", "req.2")
            .await
            .unwrap()
            .and_then(|o| o.answer);
        if got.is_some() || began.elapsed() > Duration::from_secs(5) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(seen, Some(StoredAnswer::Error { code: 3, .. })),
        "{seen:?}"
    );
    assert_eq!(c.get("fabrikam", "req:1").await.unwrap(), None);
    // Expiry is honoured even before NATS removes the entry.
    let expired = Outcomes::cluster(m0.outcomes.clone(), Duration::ZERO);
    assert!(
        expired
            .record("contoso", "req-3", "dc01", envelope(9), Admission::Relayed)
            .await
            .unwrap()
    );
    assert_eq!(c.get("contoso", "req-3").await.unwrap(), None);
    assert_eq!(
        a.purge().await.unwrap(),
        0,
        "NATS expires them, not the broker"
    );

    assert_no_secret_on_disk(&nats, &[k0, single], "operator-key").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nats_node_keeps_reads_going_and_writes_resume_within_the_bound() {
    let mut nats = NatsCluster::start(3).await;
    let key = Arc::new(StorageKey::generate().unwrap());
    let stop = CancellationToken::new();
    let leader = buckets(&nats, 0, "relay")
        .await
        .tenants
        .stream
        .get_info()
        .await
        .unwrap()
        .cluster
        .and_then(|c| c.leader)
        .expect("the tenants stream has a leader");
    let victim = nats.index_of(&leader);
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let a = node(&nats, survivors[0], &key, &stop).await;
    let b = node(&nats, survivors[1], &key, &stop).await;
    a.tenants.create("contoso", None, true).await.unwrap();
    until(&b.tenants, SEEN_WITHIN, "creation on B", |t| {
        t.get("contoso").is_some()
    })
    .await;

    nats.kill9(victim).await;
    let killed = Instant::now();
    // Reads come from memory.
    for n in [&a, &b] {
        assert!(n.tenants.require("contoso").unwrap().writeback_enabled);
    }
    // A write rides out the election of a new stream leader.
    a.tenants
        .set_writeback("contoso", false)
        .await
        .unwrap_or_else(|e| panic!("write after killing the leader {leader}: {e}"));
    let took = killed.elapsed();
    eprintln!("stream leader {leader} killed: a write went through after {took:?}");
    assert!(took < RETRY_FOR, "{took:?}");
    let took = until(&b.tenants, FAILOVER, "the write seen on B", |t| {
        writeback(t, "contoso") == Some(false)
    })
    .await;
    eprintln!("... and was seen on B {took:?} later");
    b.tenants.create("fabrikam", None, true).await.unwrap();
    let took = until(&a.tenants, FAILOVER, "creation through B seen on A", |t| {
        t.get("fabrikam").is_some()
    })
    .await;
    eprintln!("a creation through B was seen on A after {took:?}");

    // Back with its store: it catches up, and a node on it loads it all.
    nats.restart(victim).await;
    let back = node(&nats, victim, &key, &stop).await;
    assert_eq!(writeback(&back.tenants, "contoso"), Some(false));
    assert!(back.tenants.get("fabrikam").is_some());
    stop.cancel();
}

/// The first and the last node create `name` at once: one wins, the other
/// is told it exists, and every node ends up with the winner's record.
async fn race_to_create(nodes: &[&Node], name: &str) {
    let (first, last) = (nodes[0], nodes[nodes.len() - 1]);
    let (x, y) = tokio::join!(
        first.tenants.create(name, None, true),
        last.tenants.create(name, None, true)
    );
    match (&x, &y) {
        (Ok(_), Err(RelayError::TenantExists(_))) | (Err(RelayError::TenantExists(_)), Ok(_)) => {}
        other => panic!("one creation must win, the other see TenantExists: {other:?}"),
    }
    let winner = x.or(y).unwrap();
    for n in nodes {
        until(&n.tenants, SEEN_WITHIN, "the winning creation", |t| {
            t.get(name)
                .is_some_and(|r| r.keys.listen.primary == winner.keys.listen.primary)
        })
        .await;
    }
}

fn assert_key_file(path: &Path, key: &Key) {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).unwrap();
    assert_eq!(&Key::from_base64(&text).unwrap(), key, "{}", path.display());
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", path.display());
}

/// No NATS file holds a secret in base64, nor a tenant record in the clear,
/// once the files hold `marker` (the subjects are in the clear: proof that
/// the data reached the disk).
async fn assert_no_secret_on_disk(nats: &NatsCluster, secrets: &[Key], marker: &str) {
    let deadline = Instant::now() + FAILOVER;
    let files = loop {
        let files = read_files(nats.dir());
        if files
            .iter()
            .any(|(_, bytes)| contains(bytes, marker.as_bytes()))
        {
            break files;
        }
        assert!(
            Instant::now() < deadline,
            "no NATS file mentions {marker:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (path, bytes) in &files {
        for secret in secrets {
            assert!(
                !contains(bytes, secret.to_base64().as_bytes()),
                "{} holds a key in the clear",
                path.display()
            );
        }
        assert!(
            !contains(bytes, b"connector_name"),
            "{} holds a tenant record in the clear",
            path.display()
        );
    }
    eprintln!(
        "{} NATS files hold none of {} keys",
        files.len(),
        secrets.len()
    );
}

fn read_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
