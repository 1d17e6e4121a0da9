//! Replays and repeated request ids, through the handler with real
//! envelopes and across reopening the store (an agent restart).

use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use envelope::body::operation;
use envelope::{Anchor, Password, PendingReply};
use proto::pb::Operation;

use super::*;

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
        let now = now_ms();
        let header = RequestHeader {
            tenant: "contoso".into(),
            agent_key_id: self.agent.public.key_id(),
            portal_key_id: self.portal.public.key_id(),
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

fn refusal_code(error: &HandlerError) -> &str {
    error.message.split(':').next().unwrap_or_default()
}

#[tokio::test]
async fn a_fresh_envelope_with_an_applied_request_id_is_refused() {
    let f = Fixture::new();
    let handler = f.handler();
    let (first, pending) = f.seal("req-1");
    let reply = handler.handle(first).await.unwrap();
    assert_eq!(pending.open(&reply).unwrap().outcome, outcome::SUCCESS);

    let (again, _) = f.seal("req-1");
    let err = handler.handle(again).await.unwrap_err();
    assert_eq!(err.code, AgentErrorCode::Rejected);
    assert_eq!(
        err.message,
        "DUPLICATE_REQUEST_ID: request id req-1 was already applied by this agent; nothing was done"
    );
    assert_eq!(f.applied(), 1);

    // The same envelope again is still a replay, checked first.
    let (third, _) = f.seal("req-2");
    let copy = IncomingRequest {
        request_id: third.request_id.clone(),
        operation: third.operation,
        envelope: third.envelope.clone(),
        deadline: third.deadline,
        broker_clock_skew_ms: 0,
    };
    handler.handle(third).await.unwrap();
    let err = handler.handle(copy).await.unwrap_err();
    assert_eq!(refusal_code(&err), "REPLAYED");
    assert_eq!(f.applied(), 2);
}

#[tokio::test]
async fn applied_request_ids_survive_a_restart_and_others_pass() {
    let f = Fixture::new();
    let (first, _) = f.seal("req-1");
    f.handler().handle(first).await.unwrap();

    let restarted = f.handler();
    let (again, _) = f.seal("req-1");
    let err = restarted.handle(again).await.unwrap_err();
    assert_eq!(refusal_code(&err), "DUPLICATE_REQUEST_ID");
    for id in ["req-2", "req-3"] {
        let (other, _) = f.seal(id);
        restarted.handle(other).await.unwrap();
    }
    assert_eq!(f.applied(), 3);
}

#[test]
fn request_ids_are_per_tenant_and_forgotten_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = DurableReplay::open(&dir.path().join("replay.redb")).unwrap();
    let now = now_ms();
    store
        .check_and_record([1; 32], now + 1, ("contoso", "req-1"), now)
        .unwrap();
    store
        .check_and_record([2; 32], now + 1, ("fabrikam", "req-1"), now)
        .unwrap();
    let err = store
        .check_and_record([3; 32], now + 1, ("contoso", "req-1"), now)
        .unwrap_err();
    assert_eq!(refusal_code(&err), "DUPLICATE_REQUEST_ID");
    let later = now + REQUEST_ID_RETENTION.as_millis() as u64 + 1;
    store
        .check_and_record([4; 32], later + 1, ("contoso", "req-1"), later)
        .unwrap();
}

#[test]
fn a_store_from_before_request_ids_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay.redb");
    let until = now_ms() + 60_000;
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
    let now = now_ms();
    let err = store
        .check_and_record([9; 32], until, ("contoso", "req-1"), now)
        .unwrap_err();
    assert_eq!(refusal_code(&err), "REPLAYED");
    store
        .check_and_record([8; 32], until, ("contoso", "req-1"), now)
        .unwrap();
}
