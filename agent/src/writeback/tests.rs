//! The per-account limit as `Writeback` applies it, against a directory
//! that only counts what reaches it, on a clock the tests move.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use envelope::{Anchor, KeyId, Password};

use super::*;
use crate::config::AgentConfig;
use directory::{ContainerRights, DirectoryError, DirectoryRight, Imported, Policy};

/// A forest whose operations all succeed and are counted per DN.
struct Counting {
    accounts: Vec<Account>,
    calls: Mutex<Vec<String>>,
}

impl Counting {
    fn calls_for(&self, dn: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|d| *d == dn)
            .count()
    }

    fn record(&self, dn: &str) {
        self.calls.lock().unwrap().push(dn.to_owned());
    }
}

#[tonic::async_trait]
impl Directory for Counting {
    fn forest(&self) -> &str {
        "contoso"
    }
    async fn import(&self, _: Option<u64>) -> Result<Imported, DirectoryError> {
        Ok(Imported {
            accounts: self.accounts.clone(),
            deleted: Vec::new(),
            cursor: 1,
        })
    }
    async fn refresh(&self, account: &Account) -> Result<Option<Account>, DirectoryError> {
        Ok(Some(account.clone()))
    }
    async fn reset_password(
        &self,
        account: &Account,
        _: &Password,
        _: bool,
        _: bool,
    ) -> Result<(), Refusal> {
        self.record(&account.dn);
        Ok(())
    }
    async fn change_password(
        &self,
        account: &Account,
        _: &Password,
        _: &Password,
    ) -> Result<(), Refusal> {
        self.record(&account.dn);
        Err(Refusal::WrongCurrentPassword)
    }
    async fn unlock(&self, account: &Account) -> Result<(), Refusal> {
        self.record(&account.dn);
        Ok(())
    }
    async fn policy(&self, account: &Account) -> Result<ResultantPolicy, Refusal> {
        self.record(&account.dn);
        Ok(ResultantPolicy::Known(Policy {
            source: "Default Domain Policy".into(),
            min_length: 8,
            complexity: true,
            history_length: 24,
            min_age_secs: 0,
            max_age_secs: 0,
        }))
    }
    async fn effective_rights(&self) -> Result<Vec<ContainerRights>, DirectoryError> {
        Ok(Vec::new())
    }
}

fn account(name: &str, guid: u8) -> Account {
    Account {
        forest: "contoso".into(),
        dn: format!("CN={name},DC=contoso,DC=example"),
        sam_account_name: name.into(),
        user_principal_name: format!("{name}@contoso.example"),
        object_guid: [guid; 16],
        display_name: name.into(),
        enabled: true,
        usn_changed: 1,
    }
}

struct Fixture {
    writeback: Writeback,
    forest: Arc<Counting>,
    now: Arc<AtomicU64>,
    dir: tempfile::TempDir,
}

async fn fixture(per_hour: u32) -> Fixture {
    let forest = Arc::new(Counting {
        accounts: vec![account("ada", 1), account("grace", 2)],
        calls: Mutex::new(Vec::new()),
    });
    let space = Arc::new(ConnectorSpace::new(vec![forest.clone()]));
    space.import(|_, _| {}).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicU64::new(1_700_000_000_000));
    let clock = Arc::clone(&now);
    let writeback = Writeback {
        tenant: "contoso".into(),
        space,
        events: Arc::new(EventLog::open(dir.path(), 1 << 20, 1).unwrap()),
        enabled: true,
        limiter: AccountLimiter::with_clock(
            per_hour,
            Arc::new(move || clock.load(Ordering::SeqCst)),
        ),
    };
    Fixture {
        writeback,
        forest,
        now,
        dir,
    }
}

fn header(op: u8) -> RequestHeader {
    RequestHeader {
        tenant: "contoso".into(),
        agent_key_id: KeyId([0; 8]),
        portal_key_id: KeyId([0; 8]),
        agent_id: "dc1-agent".into(),
        request_id: "req-1".into(),
        operation: op,
        issued_at_ms: 0,
        expires_at_ms: 1,
    }
}

fn upn(name: &str) -> Anchor {
    Anchor::UserPrincipalName(format!("{name}@contoso.example"))
}

async fn reset(f: &Fixture, name: &str) -> ReplyBody {
    let body = RequestBody::reset(upn(name), Password::new("Difference-Engine-2"));
    f.writeback
        .apply(&header(operation::RESET_PASSWORD), &body)
        .await
}

const ADA: &str = "CN=ada,DC=contoso,DC=example";
const GRACE: &str = "CN=grace,DC=contoso,DC=example";

#[tokio::test]
async fn the_attempt_over_the_limit_is_refused_without_touching_the_directory() {
    let f = fixture(3).await;
    for _ in 0..3 {
        assert_eq!(reset(&f, "ada").await.outcome, outcome::SUCCESS);
    }
    let r = reset(&f, "ada").await;
    assert_eq!(r.outcome, outcome::RATE_LIMITED, "{r:?}");
    assert_eq!(
        r.message,
        "too many password operations for this account: at most 3 per hour; try again in about 60 minutes"
    );
    assert!(r.details.contains(&("limit".into(), "3".into())), "{r:?}");
    assert!(
        r.details
            .contains(&("retry_after_secs".into(), "3600".into())),
        "{r:?}"
    );
    assert_eq!(
        f.forest.calls_for(ADA),
        3,
        "the refused attempt reached the directory"
    );

    // Another account has its own count.
    assert_eq!(reset(&f, "grace").await.outcome, outcome::SUCCESS);
    assert_eq!(f.forest.calls_for(GRACE), 1);

    // The event log names the limit's event and the account.
    let log = std::fs::read_to_string(f.dir.path().join("events.jsonl")).unwrap();
    let limited: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["event_id"] == ids::RATE_LIMITED)
        .expect("a rate-limit event");
    assert_eq!(limited["outcome"], "RATE_LIMITED");
    assert_eq!(limited["account_dn"], ADA);
    assert_eq!(limited["level"], "warning");
}

#[tokio::test]
async fn the_limit_is_per_hour_and_shared_by_changes_and_unlocks() {
    let f = fixture(2).await;
    let change = RequestBody::change(
        upn("ada"),
        Password::new("Guess-Number-1"),
        Password::new("Difference-Engine-2"),
    );
    // Refused changes count: guessing the current password is throttled.
    let r = f
        .writeback
        .apply(&header(operation::CHANGE_PASSWORD), &change)
        .await;
    assert_eq!(r.outcome, outcome::WRONG_CURRENT_PASSWORD);
    f.now.fetch_add(30 * 60_000, Ordering::SeqCst);
    let unlock = RequestBody::without_passwords(upn("ada"));
    let r = f
        .writeback
        .apply(&header(operation::UNLOCK_ACCOUNT), &unlock)
        .await;
    assert_eq!(r.outcome, outcome::SUCCESS);
    let r = f
        .writeback
        .apply(&header(operation::CHANGE_PASSWORD), &change)
        .await;
    assert_eq!(r.outcome, outcome::RATE_LIMITED);
    assert!(
        r.message.ends_with("try again in about 30 minutes"),
        "{}",
        r.message
    );

    // Once the first attempt leaves the window, one more is allowed.
    f.now.fetch_add(30 * 60_000, Ordering::SeqCst);
    assert_eq!(reset(&f, "ada").await.outcome, outcome::SUCCESS);
    assert_eq!(reset(&f, "ada").await.outcome, outcome::RATE_LIMITED);
    assert_eq!(f.forest.calls_for(ADA), 3);
}

#[tokio::test]
async fn policy_queries_are_never_limited_and_zero_means_unlimited() {
    let f = fixture(1).await;
    assert_eq!(reset(&f, "ada").await.outcome, outcome::SUCCESS);
    assert_eq!(reset(&f, "ada").await.outcome, outcome::RATE_LIMITED);
    let query = RequestBody::without_passwords(upn("ada"));
    for _ in 0..5 {
        let r = f
            .writeback
            .apply(&header(operation::GET_PASSWORD_POLICY), &query)
            .await;
        assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    }

    let unlimited = fixture(0).await;
    for _ in 0..20 {
        assert_eq!(reset(&unlimited, "ada").await.outcome, outcome::SUCCESS);
    }
}

#[test]
fn the_limit_is_configured_in_a_limits_table() {
    let base = "broker = \"https://x\"\ntenant = \"a\"\nlisten_key_file = \"k\"\n";
    let config = AgentConfig::from_toml(base).unwrap();
    assert_eq!(config.limits.resets_per_account_per_hour, 5);
    let config = AgentConfig::from_toml(&format!(
        "{base}[limits]\nresets_per_account_per_hour = 0\n"
    ))
    .unwrap();
    assert_eq!(config.limits.resets_per_account_per_hour, 0);
    let err =
        AgentConfig::from_toml(&format!("{base}[limits]\nresets_per_user = 3\n")).unwrap_err();
    assert!(err.to_string().contains("resets_per_user"), "{err}");
}

#[test]
fn a_permission_refusal_tells_the_user_no_dn_and_the_event_log_everything() {
    let refusal = Refusal::PermissionDenied {
        right: DirectoryRight::ResetPassword,
        container: "OU=Team-A,OU=Dept-Sales,OU=Region-West,DC=x".into(),
        blocked_at: Some("OU=Region-West,DC=x".into()),
        denied_at: Some("OU=Dept-Sales,OU=Region-West,DC=x".into()),
    };
    let (reply, id) = refusal_reply(&refusal);
    assert_eq!(reply.outcome, outcome::PERMISSION_DENIED);
    assert_eq!(id, ids::INSUFFICIENT_PERMISSIONS);
    assert_eq!(
        reply.details,
        [("right".to_owned(), "Reset Password".to_owned())]
    );
    assert_eq!(
        reply.message,
        "the password service is not allowed to change this account; your help desk can fix this"
    );
    assert_eq!(
        refusal_place(&refusal),
        Some((
            "OU=Team-A,OU=Dept-Sales,OU=Region-West,DC=x".to_owned(),
            Some("OU=Region-West,DC=x".to_owned()),
            Some("OU=Dept-Sales,OU=Region-West,DC=x".to_owned()),
        ))
    );
    // The event's text is the refusal in full.
    let event = refusal.to_string();
    for dn in [
        "on OU=Team-A,OU=Dept-Sales,OU=Region-West,DC=x",
        "an explicit deny on OU=Dept-Sales,OU=Region-West,DC=x decides",
        "inheritance is blocked at OU=Region-West,DC=x",
    ] {
        assert!(event.contains(dn), "{event}");
    }
}

/// The FAILS_COMPLEXITY details as the agent builds them, against the row
/// of docs/PROTOCOL.md's outcome table that a portal developer reads.
#[test]
fn complexity_details_are_what_protocol_md_says() {
    use directory::{Category, Contained};
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .expect("PROTOCOL.md");
    let row = doc
        .lines()
        .find(|l| l.starts_with("| 2 | FAILS_COMPLEXITY |"))
        .expect("the FAILS_COMPLEXITY row");
    let all = [
        Category::Uppercase,
        Category::Lowercase,
        Category::Digit,
        Category::Symbol,
        Category::OtherLetter,
    ];
    let listed: Vec<String> = all.iter().map(|c| format!("`{}`", c.as_str())).collect();
    assert!(row.contains(&listed.join(", ")), "{row}");
    let (reply, _) = refusal_reply(&Refusal::FailsComplexity {
        missing: vec![Category::Uppercase, Category::Symbol],
        contains: Some(Contained::DisplayName("Lovelace".into())),
    });
    assert_eq!(
        reply.details,
        [
            ("missing".to_owned(), "uppercase letter, symbol".to_owned()),
            ("contains".to_owned(), "Lovelace".to_owned()),
            ("contains_kind".to_owned(), "display_name".to_owned()),
        ]
    );
    assert!(row.contains("separated by `, `"), "{row}");
    for kind in [
        Contained::AccountName("ada".into()).kind(),
        Contained::DisplayName("x".into()).kind(),
    ] {
        assert!(row.contains(&format!("`{kind}`")), "{kind}: {row}");
    }
}
