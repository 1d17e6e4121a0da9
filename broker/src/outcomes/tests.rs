use redb::ReadableTable;

use super::local::{make_room, split};
use super::*;
use crate::store::codec::{decode_outcome, encode_outcome};
use crate::store::{OUTCOMES, Store};

fn outcomes(retention: Duration) -> (tempfile::TempDir, Outcomes) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("b.redb"), crate::sealing::test_key()).unwrap();
    (
        dir,
        Outcomes::new(store, retention, &Limits::default()).unwrap(),
    )
}

#[test]
fn records_round_trip() {
    for answer in [
        None,
        Some(StoredAnswer::Envelope(vec![1, 2, 3])),
        Some(StoredAnswer::Error {
            code: 3,
            refusal: 5,
            message: "unknown key".into(),
        }),
        Some(StoredAnswer::Failed {
            refusal: 10,
            message: "expired (refusal EXPIRED; AGENT_ERROR_CODE_REJECTED)".into(),
        }),
        Some(StoredAnswer::Failed {
            refusal: 0,
            message: "no handler (AGENT_ERROR_CODE_UNSUPPORTED_OPERATION)".into(),
        }),
    ] {
        let o = OutcomeRecord {
            agent_id: "dc01".into(),
            acknowledged: answer.is_some(),
            expires_unix_ms: 42,
            answer,
        };
        assert_eq!(decode_outcome(&encode_outcome(&o)), Some(o));
    }
    let acknowledged = OutcomeRecord {
        agent_id: "dc01".into(),
        acknowledged: true,
        expires_unix_ms: 42,
        answer: None,
    };
    assert_eq!(
        decode_outcome(&encode_outcome(&acknowledged)),
        Some(acknowledged)
    );
    assert_eq!(decode_outcome(&[9, 9, 9]), None);
}

/// A record as format 1 wrote it: the fields of format 2 without the
/// refusal.
fn format_1(state: u8, code: i32, agent_id: &str, rest: &[u8]) -> Vec<u8> {
    let mut out = vec![1, state];
    out.extend_from_slice(&42i64.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(agent_id.len() as u16).to_be_bytes());
    out.extend_from_slice(agent_id.as_bytes());
    out.extend_from_slice(rest);
    out
}

#[test]
fn records_of_format_1_are_still_read() {
    let read = |bytes: Vec<u8>| decode_outcome(&bytes).expect("readable").answer;
    assert_eq!(read(format_1(0, 1, "dc01", &[])), None);
    assert_eq!(
        read(format_1(1, 0, "dc01", &[7, 8])),
        Some(StoredAnswer::Envelope(vec![7, 8]))
    );
    assert_eq!(
        read(format_1(2, 3, "dc01", b"REPLAYED: x")),
        Some(StoredAnswer::Error {
            code: 3,
            refusal: 0,
            message: "REPLAYED: x".into()
        })
    );
    assert_eq!(
        read(format_1(3, 0, "dc01", b"no such user (REJECTED)")),
        Some(StoredAnswer::Failed {
            refusal: 0,
            message: "no such user (REJECTED)".into()
        })
    );
    let waiting = decode_outcome(&format_1(0, 1, "dc01", &[])).unwrap();
    assert!(waiting.acknowledged);
    assert_eq!(waiting.expires_unix_ms, 42);
    assert_eq!(waiting.agent_id, "dc01");
}

fn envelope(b: u8) -> StoredAnswer {
    StoredAnswer::Envelope(vec![b])
}

#[tokio::test]
async fn an_answer_replaces_waiting_and_is_never_replaced() {
    let (_dir, o) = outcomes(Duration::from_secs(60));
    o.expect("t", "r1", "dc01", false).await.unwrap();
    assert_eq!(o.get("t", "r1").await.unwrap().unwrap().answer, None);
    assert!(
        o.record("t", "r1", "dc01", envelope(7), Admission::Late)
            .await
            .unwrap()
    );
    for admission in [Admission::Late, Admission::Relayed] {
        assert!(
            !o.record("t", "r1", "dc02", envelope(8), admission)
                .await
                .unwrap()
        );
    }
    o.expect("t", "r1", "dc01", false).await.unwrap();
    let got = o.get("t", "r1").await.unwrap().unwrap();
    assert_eq!(got.answer, Some(envelope(7)));
    assert_eq!(got.agent_id, "dc01");
    // Tenants do not see each other's outcomes.
    assert_eq!(o.get("u", "r1").await.unwrap(), None);
}

#[tokio::test]
async fn a_late_answer_needs_a_request_awaited_from_that_agent() {
    let (_dir, o) = outcomes(Duration::from_secs(60));
    // Never relayed: an agent cannot make a record of its own.
    assert!(
        !o.record("t", "r1", "dc01", envelope(1), Admission::Late)
            .await
            .unwrap()
    );
    assert_eq!(o.get("t", "r1").await.unwrap(), None);
    // Awaited from dc01: another agent's answer is not kept.
    o.expect("t", "r1", "dc01", false).await.unwrap();
    assert!(
        !o.record("t", "r1", "dc02", envelope(2), Admission::Late)
            .await
            .unwrap()
    );
    assert_eq!(o.get("t", "r1").await.unwrap().unwrap().answer, None);
    // A retry answered by dc02 through the broker settles it.
    assert!(
        o.settle(
            "t",
            "r1",
            Settled::Answered {
                agent_id: "dc02".into(),
                answer: envelope(3),
            },
        )
        .await
        .unwrap()
    );
    assert_eq!(
        o.get("t", "r1").await.unwrap().unwrap().answer,
        Some(envelope(3))
    );
    // Awaited from an agent the broker lost track of: any may post it.
    o.expect("t", "r2", "", false).await.unwrap();
    assert!(
        o.record("t", "r2", "dc02", envelope(4), Admission::Late)
            .await
            .unwrap()
    );
    assert!(!o.settle("t", "r3", Settled::NotRelayed).await.unwrap());
    assert_eq!(o.get("t", "r3").await.unwrap(), None);
}

#[tokio::test]
async fn an_awaited_record_learns_its_agent_and_only_it_is_forgotten() {
    let (_dir, o) = outcomes(Duration::from_secs(60));
    // Opened before routing, the agent not known yet; named once known,
    // with whether it acknowledged; an unnamed expect changes nothing.
    assert!(o.expect("t", "r1", "", false).await.unwrap());
    assert!(o.expect("t", "r1", "dc01", true).await.unwrap());
    assert!(!o.expect("t", "r1", "dc01", true).await.unwrap());
    assert!(!o.expect("t", "r1", "", false).await.unwrap());
    assert!(
        !o.record("t", "r1", "dc02", envelope(1), Admission::Late)
            .await
            .unwrap()
    );
    let awaited = o.get("t", "r1").await.unwrap().unwrap();
    assert_eq!(
        (
            awaited.agent_id.as_str(),
            awaited.acknowledged,
            awaited.answer
        ),
        ("dc01", true, None)
    );
    o.forget("t", "r1").await.unwrap();
    assert_eq!(o.get("t", "r1").await.unwrap(), None);
    // An answer is never forgotten.
    o.record("t", "r2", "dc01", envelope(2), Admission::Relayed)
        .await
        .unwrap();
    o.forget("t", "r2").await.unwrap();
    assert_eq!(
        o.get("t", "r2").await.unwrap().unwrap().answer,
        Some(envelope(2))
    );
}

fn awaited(expiry: i64) -> OutcomeRecord {
    OutcomeRecord {
        agent_id: "dc01".into(),
        acknowledged: false,
        expires_unix_ms: expiry,
        answer: None,
    }
}

#[test]
fn a_full_tenant_evicts_the_record_that_expires_first() {
    use redb::ReadableTableMetadata;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("b.redb"), crate::sealing::test_key()).unwrap();
    let tx = store.db().begin_write().unwrap();
    {
        let mut table = tx.open_table(OUTCOMES).unwrap();
        let mut index = index::Index::open(&tx).unwrap();
        for (id, expiry) in [("t/a", 30), ("t/b", 10), ("t/c", 20), ("u/z", 1)] {
            table
                .insert(id, encode_outcome(&awaited(expiry)).as_slice())
                .unwrap();
            let (tenant, request_id) = split(id);
            index.added(tenant, request_id, expiry as u64).unwrap();
        }
        make_room(&mut table, &mut index, "t", 4).unwrap();
        assert_eq!(table.len().unwrap(), 4, "room left: nothing evicted");
        make_room(&mut table, &mut index, "t", 3).unwrap();
        assert!(table.get("t/b").unwrap().is_none(), "the first to expire");
        for kept in ["t/a", "t/c", "u/z"] {
            assert!(table.get(kept).unwrap().is_some(), "{kept}");
        }
        assert_eq!(index.count("t").unwrap(), 2);
        assert_eq!(index.first("t").unwrap(), Some(("c".to_owned(), 20)));
    }
    tx.commit().unwrap();
}

/// The index agrees with a scan of the records after every kind of
/// change, and a store written before the index existed is indexed when
/// it is opened.
#[tokio::test]
async fn the_index_follows_every_change_and_is_built_for_an_old_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    let store = Store::open(&path, crate::sealing::test_key()).unwrap();
    // Records as an older broker wrote them: no index.
    {
        let tx = store.db().begin_write().unwrap();
        {
            let mut table = tx.open_table(OUTCOMES).unwrap();
            let far = now_unix_ms() + 3_600_000;
            for (id, expiry) in [("t/old1", far + 5), ("t/old2", far + 1), ("u/x", far)] {
                table
                    .insert(id, encode_outcome(&awaited(expiry)).as_slice())
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let o = Outcomes::new(store.clone(), Duration::from_secs(3600), &Limits::default()).unwrap();
    let check = |store: &Store| {
        let tx = store.db().begin_write().unwrap();
        let mut scanned: std::collections::BTreeMap<String, (u64, Option<(u64, String)>)> =
            Default::default();
        {
            let table = tx.open_table(OUTCOMES).unwrap();
            for r in table.iter().unwrap() {
                let (k, v) = r.unwrap();
                let (tenant, id) = split(k.value());
                let e = index::expiry_of(v.value());
                let t = scanned.entry(tenant.to_owned()).or_default();
                t.0 += 1;
                if t.1.as_ref().is_none_or(|(first, _)| e < *first) {
                    t.1 = Some((e, id.to_owned()));
                }
            }
            let index = index::Index::open(&tx).unwrap();
            for (tenant, (count, first)) in &scanned {
                assert_eq!(index.count(tenant).unwrap(), *count, "{tenant}");
                let (e, id) = first.clone().unwrap();
                assert_eq!(index.first(tenant).unwrap(), Some((id, e)), "{tenant}");
            }
        }
        tx.abort().unwrap();
        scanned.values().map(|(c, _)| *c).sum::<u64>()
    };
    assert_eq!(check(&store), 3);
    o.expect("t", "r1", "", false).await.unwrap();
    o.expect("t", "r1", "dc01", true).await.unwrap();
    o.record("t", "r2", "dc01", envelope(2), Admission::Relayed)
        .await
        .unwrap();
    o.expect("t", "r3", "", false).await.unwrap();
    o.forget("t", "r3").await.unwrap();
    o.settle(
        "t",
        "r1",
        Settled::Answered {
            agent_id: "dc01".into(),
            answer: envelope(1),
        },
    )
    .await
    .unwrap();
    assert_eq!(check(&store), 5);
    // Reopening does not index twice.
    let again =
        Outcomes::new(store.clone(), Duration::from_secs(3600), &Limits::default()).unwrap();
    assert_eq!(check(&store), 5);
    // Everything expired: purged, and the index with it.
    let gone = Outcomes::new(store.clone(), Duration::ZERO, &Limits::default()).unwrap();
    let tx = store.db().begin_write().unwrap();
    {
        let mut table = tx.open_table(OUTCOMES).unwrap();
        let mut index = index::Index::open(&tx).unwrap();
        let old = index::expiry_of(table.get("u/x").unwrap().unwrap().value());
        table
            .insert("u/x", encode_outcome(&awaited(1)).as_slice())
            .unwrap();
        index.replaced("u", "x", old, 1).unwrap();
    }
    tx.commit().unwrap();
    drop((o, again));
    assert_eq!(gone.purge().await.unwrap(), 1);
    assert_eq!(check(&store), 4);
}

/// A tenant's records stay within its bytes: the newest answer is kept,
/// the records that expire first make room; the in-memory view of the
/// records agrees with the store, also when read again at start.
#[tokio::test]
async fn a_tenants_bytes_are_bounded_and_late_answers_checked_without_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("b.redb"), crate::sealing::test_key()).unwrap();
    let limits = Limits {
        max_outcome_bytes_per_tenant: 10_000,
        ..Limits::default()
    };
    let open = |store: &Store| {
        let local = Arc::new(LocalOutcomes::open(store.clone(), &limits).unwrap());
        let outcomes = Outcomes::with_store(Box::new(Arc::clone(&local)), Duration::from_secs(60));
        (local, outcomes.with_limits(&limits))
    };
    let (local, o) = open(&store);
    assert_eq!(o.check_late("t", "r0", "dc01"), LateCheck::NotAwaited);
    for i in 0..10 {
        o.expect("t", &format!("r{i}"), "dc01", true).await.unwrap();
    }
    o.expect("u", "x", "", false).await.unwrap();
    assert_eq!(o.check_late("t", "r0", "dc01"), LateCheck::Awaited);
    assert_eq!(o.check_late("t", "r0", "dc02"), LateCheck::NotAwaited);
    assert_eq!(o.check_late("u", "x", "any"), LateCheck::Awaited);
    for i in 0..10 {
        let big = StoredAnswer::Envelope(vec![0; 3_000]);
        o.record("t", &format!("r{i}"), "dc01", big, Admission::Late)
            .await
            .unwrap();
    }
    let known = &local.known;
    assert!(known.bytes("t") <= 10_000, "{}", known.bytes("t"));
    assert_eq!(o.check_late("t", "r9", "dc01"), LateCheck::Answered);
    assert!(o.get("t", "r9").await.unwrap().unwrap().answer.is_some());
    assert_eq!(o.get("t", "r0").await.unwrap(), None, "evicted");
    assert_eq!(o.check_late("t", "r0", "dc01"), LateCheck::NotAwaited);
    // Only answers made room: no awaited record was lost to them.
    for i in 0..10 {
        assert_eq!(
            o.check_late("t", &format!("r{i}"), "dc01") == LateCheck::Answered,
            o.get("t", &format!("r{i}")).await.unwrap().is_some(),
            "r{i}"
        );
    }
    assert_eq!(
        o.check_late("u", "x", "any"),
        LateCheck::Awaited,
        "untouched"
    );
    let bytes = known.bytes("t");
    drop((o, local));
    let (local, again) = open(&store);
    assert_eq!(local.known.bytes("t"), bytes);
    assert_eq!(again.check_late("t", "r9", "dc01"), LateCheck::Answered);
    assert_eq!(again.check_late("u", "x", "any"), LateCheck::Awaited);
}

#[test]
fn late_answers_under_way_are_bounded_per_tenant() {
    let pending = Arc::new(late::PendingWrites::default());
    let held: Vec<_> = (0..3).map(|_| pending.reserve("t", 3).unwrap()).collect();
    assert!(pending.reserve("t", 3).is_none());
    let other = pending.reserve("u", 3).expect("another tenant's own bound");
    drop(held);
    assert_eq!(pending.of("t"), 0);
    assert!(pending.reserve("t", 3).is_some());
    drop(other);
    assert_eq!(pending.of("u"), 0);
}

#[tokio::test]
async fn expired_outcomes_are_gone_and_purged() {
    let (_dir, o) = outcomes(Duration::ZERO);
    o.record("t", "r1", "dc01", envelope(7), Admission::Relayed)
        .await
        .unwrap();
    assert_eq!(o.get("t", "r1").await.unwrap(), None);
    assert_eq!(o.purge().await.unwrap(), 1);
}
