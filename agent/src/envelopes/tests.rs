//! Replays and repeated request ids, through the handler with real
//! envelopes and across reopening the store (an agent restart).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use redb::Database;

use envelope::body::operation;
use envelope::{Anchor, Password, PendingReply};
use proto::pb::Operation;

use super::store::{REPLAY, RecordError};
use super::*;

/// The refusal code of a store result, or "ok".
fn recorded(result: Result<(), RecordError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(RecordError::Replayed(e)) => e.code(),
        Err(RecordError::Duplicate) => "DUPLICATE_REQUEST_ID",
        Err(RecordError::Store) => "REPLAY_STORE_UNAVAILABLE",
    }
}

/// Counts what it applies; every request succeeds.
#[derive(Default)]
struct Counting(AtomicUsize);

#[tonic::async_trait]
impl Operations for Counting {
    async fn apply(&self, _header: &RequestHeader, _body: &RequestBody) -> ReplyBody {
        self.0.fetch_add(1, Ordering::SeqCst);
        ReplyBody {
            outcome: outcome::SUCCESS,
            message: "the password was changed".into(),
            details: Vec::new(),
        }
    }
}

struct Fixture {
    portal: KeyPair,
    agent: KeyPair,
    applied: Arc<Counting>,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            portal: KeyPair::generate(&mut envelope::os_rng()),
            agent: KeyPair::generate(&mut envelope::os_rng()),
            applied: Arc::new(Counting::default()),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("replay.redb")
    }

    /// A handler over the store as it is on disk now, as after a restart.
    fn handler(&self) -> EnvelopeHandler {
        EnvelopeHandler {
            tenant: "contoso".into(),
            agent_id: "dc1-agent".into(),
            keys: KeySource::Fixed {
                keys: vec![self.agent.clone()],
                portals: vec![self.portal.public.clone()],
            },
            validity: Validity::default(),
            replay: Arc::new(DurableReplay::open(&self.store()).unwrap()),
            operations: self.applied.clone(),
            events: None,
        }
    }

    /// A fresh envelope (its own enc) for `request_id`.
    fn seal(&self, request_id: &str) -> (IncomingRequest, PendingReply) {
        let now = unix_ms();
        let header = RequestHeader {
            tenant: "contoso".into(),
            agent_key_id: self.agent.public.key_id(),
            portal_key_id: self.portal.public.key_id(),
            agent_id: "dc1-agent".into(),
            request_id: request_id.into(),
            operation: operation::RESET_PASSWORD,
            issued_at_ms: now,
            expires_at_ms: now + 60_000,
        };
        let body = RequestBody::reset(
            Anchor::UserPrincipalName("ada@contoso.example".into()),
            Password::new("Difference-Engine-2"),
        );
        let (envelope, pending) = envelope::seal_request(
            &self.portal,
            &self.agent.public,
            &header,
            &body,
            &mut envelope::os_rng(),
        )
        .unwrap();
        let request = IncomingRequest {
            request_id: request_id.into(),
            operation: Operation::ResetPassword,
            envelope,
            deadline: Instant::now() + Duration::from_secs(30),
            broker_clock_skew_ms: 0,
        };
        (request, pending)
    }

    fn applied(&self) -> usize {
        self.applied.0.load(Ordering::SeqCst)
    }
}

/// The refusal a sealed NOT_APPLIED reply carries.
fn sealed_refusal(reply: &[u8], pending: &PendingReply) -> EnvelopeRefusal {
    let body = pending.open(reply).expect("a sealed reply");
    assert_eq!(body.outcome, outcome::NOT_APPLIED, "{body:?}");
    EnvelopeRefusal::from_name(body.detail("reason").expect("a reason")).expect("known")
}

#[test]
fn every_open_error_has_its_refusal() {
    use envelope::OpenError as E;
    let key = envelope::KeyId([0; 8]);
    let cases = [
        (E::Malformed("x"), EnvelopeRefusal::Malformed),
        (
            E::UnsupportedVersion(2),
            EnvelopeRefusal::UnsupportedVersion,
        ),
        (
            E::WrongTenant {
                expected: "a".into(),
                found: "b".into(),
            },
            EnvelopeRefusal::WrongTenant,
        ),
        (E::UnknownKey(key), EnvelopeRefusal::UnknownKey),
        (E::UnknownSender(key), EnvelopeRefusal::UnknownSender),
        (
            E::AuthenticationFailed,
            EnvelopeRefusal::AuthenticationFailed,
        ),
        (
            E::Expired {
                expired_ms_ago: 1,
                allowance_ms: 1,
            },
            EnvelopeRefusal::Expired,
        ),
        (
            E::NotYetValid {
                ahead_ms: 1,
                allowance_ms: 1,
            },
            EnvelopeRefusal::NotYetValid,
        ),
        (
            E::LifetimeTooLong {
                lifetime_ms: 1,
                max_ms: 1,
            },
            EnvelopeRefusal::LifetimeTooLong,
        ),
        (E::Replayed, EnvelopeRefusal::Replayed),
        (E::InvalidBody("x"), EnvelopeRefusal::InvalidBody),
    ];
    for (error, refusal) in cases {
        assert_eq!(refusal_of(&error), refusal);
        // The typed name is the envelope crate's own code.
        assert_eq!(refusal.name(), error.code());
    }
}

#[tokio::test]
async fn a_fresh_envelope_with_an_applied_request_id_is_refused() {
    let f = Fixture::new();
    let handler = f.handler();
    let (first, pending) = f.seal("req-1");
    let reply = handler.handle(first).await.unwrap();
    assert_eq!(pending.open(&reply).unwrap().outcome, outcome::SUCCESS);

    // Refused after opening: sealed to the portal, not an AgentError.
    let (again, pending) = f.seal("req-1");
    let reply = handler.handle(again).await.unwrap();
    assert_eq!(
        sealed_refusal(&reply, &pending),
        EnvelopeRefusal::DuplicateRequestId
    );
    assert_eq!(f.applied(), 1);

    // The same envelope again is still a replay, checked first.
    let (third, pending) = f.seal("req-2");
    let copy = IncomingRequest {
        request_id: third.request_id.clone(),
        operation: third.operation,
        envelope: third.envelope.clone(),
        deadline: third.deadline,
        broker_clock_skew_ms: 0,
    };
    handler.handle(third).await.unwrap();
    let reply = handler.handle(copy).await.unwrap();
    assert_eq!(sealed_refusal(&reply, &pending), EnvelopeRefusal::Replayed);
    assert_eq!(f.applied(), 2);
}

#[tokio::test]
async fn applied_request_ids_survive_a_restart_and_others_pass() {
    let f = Fixture::new();
    let (first, _) = f.seal("req-1");
    f.handler().handle(first).await.unwrap();

    let restarted = f.handler();
    let (again, pending) = f.seal("req-1");
    let reply = restarted.handle(again).await.unwrap();
    assert_eq!(
        sealed_refusal(&reply, &pending),
        EnvelopeRefusal::DuplicateRequestId
    );
    for id in ["req-2", "req-3"] {
        let (other, _) = f.seal(id);
        restarted.handle(other).await.unwrap();
    }
    assert_eq!(f.applied(), 3);
}

#[tokio::test]
async fn request_ids_are_per_tenant_and_forgotten_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = DurableReplay::open(&dir.path().join("replay.redb")).unwrap();
    let now = unix_ms();
    let record = |enc: u8, tenant, now: u64| {
        store.check_and_record([enc; 32], now + 1, (tenant, "req-1"), now)
    };
    assert_eq!(recorded(record(1, "contoso", now).await), "ok");
    assert_eq!(recorded(record(2, "fabrikam", now).await), "ok");
    assert_eq!(
        recorded(record(3, "contoso", now).await),
        "DUPLICATE_REQUEST_ID"
    );
    let later = now + REQUEST_ID_RETENTION.as_millis() as u64 + 1;
    assert_eq!(recorded(record(4, "contoso", later).await), "ok");
}

#[tokio::test]
async fn a_store_from_before_request_ids_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.redb");
    let until = unix_ms() + 60_000;
    {
        let db = Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(REPLAY)
            .unwrap()
            .insert([9u8; 32].as_slice(), until)
            .unwrap();
        tx.commit().unwrap();
    }
    let store = DurableReplay::open(&path).unwrap();
    assert_eq!(store.len(), 1, "the old entries are restored");
    let now = unix_ms();
    let result = store
        .check_and_record([9; 32], until, ("contoso", "req-1"), now)
        .await;
    assert_eq!(recorded(result), "REPLAYED");
    let result = store
        .check_and_record([8; 32], until, ("contoso", "req-1"), now)
        .await;
    assert_eq!(recorded(result), "ok");
}

/// Many requests at once share commits; a request id repeated among them
/// is still recorded once, and every entry survives reopening the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_entries_are_grouped_and_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.redb");
    let store = Arc::new(DurableReplay::open(&path).unwrap());
    let now = unix_ms();
    let until = now + 60_000;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u8 {
        let store = store.clone();
        tasks.spawn(async move {
            // Ids 0..100, each twice, with 200 different encs.
            let id = format!("req-{}", i % 100);
            let result = store
                .check_and_record([i; 32], until, ("contoso", &id), now)
                .await;
            recorded(result)
        });
    }
    let mut codes = Vec::new();
    while let Some(code) = tasks.join_next().await {
        codes.push(code.unwrap());
    }
    assert_eq!(codes.iter().filter(|c| **c == "ok").count(), 100);
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == "DUPLICATE_REQUEST_ID")
            .count(),
        100
    );
    drop(store);
    let reopened = DurableReplay::open(&path).unwrap();
    assert_eq!(reopened.len(), 100, "every recorded enc came back");
    for i in 0..100u8 {
        // A fresh envelope for each applied id.
        let mut enc = [0xee; 32];
        enc[0] = i;
        let id = format!("req-{i}");
        let result = reopened
            .check_and_record(enc, until, ("contoso", &id), now)
            .await;
        assert_eq!(recorded(result), "DUPLICATE_REQUEST_ID");
    }
}

#[tokio::test]
async fn refusals_before_opening_are_typed_agent_errors_and_after_it_sealed() {
    let f = Fixture::new();
    let handler = f.handler();
    // Sealed to a key this agent does not hold: nobody to seal to.
    let other = Fixture::new();
    let (foreign, _) = other.seal("req-1");
    let err = handler.handle(foreign).await.unwrap_err();
    assert_eq!(err.code, AgentErrorCode::Rejected);
    assert_eq!(err.refusal(), Some(EnvelopeRefusal::UnknownKey));
    assert!(!err.message.starts_with("UNKNOWN_KEY"), "{}", err.message);
    // Relabelled by the broker: opened, so the refusal is sealed.
    let (mut relabelled, pending) = f.seal("req-2");
    relabelled.request_id = "req-X".into();
    let reply = handler.handle(relabelled).await.unwrap();
    assert_eq!(
        sealed_refusal(&reply, &pending),
        EnvelopeRefusal::RequestIdMismatch
    );
    let (mut relabelled, pending) = f.seal("req-3");
    relabelled.operation = Operation::UnlockAccount;
    let reply = handler.handle(relabelled).await.unwrap();
    assert_eq!(
        sealed_refusal(&reply, &pending),
        EnvelopeRefusal::OperationMismatch
    );
    // Decrypted, then refused for its lifetime: sealed as well.
    drop(handler);
    let strict = EnvelopeHandler {
        validity: Validity {
            max_lifetime: Duration::from_secs(1),
            ..Validity::default()
        },
        ..f.handler()
    };
    let (long, pending) = f.seal("req-4");
    let reply = strict.handle(long).await.unwrap();
    assert_eq!(
        sealed_refusal(&reply, &pending),
        EnvelopeRefusal::LifetimeTooLong
    );
    assert_eq!(f.applied(), 0);
}
