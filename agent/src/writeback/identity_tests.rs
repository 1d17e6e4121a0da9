//! Which account a request acts on, and what a failure tells the user:
//! moved and deleted accounts in an embedded forest, and a directory
//! failure whose text must stay in the event log.

use std::path::Path;

use envelope::{Anchor, KeyId, Password};

use super::*;
use directory::embedded::EmbeddedDirectory;
use directory::{ContainerRights, Directory, DirectoryError, Imported};

const ADA: &str = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
const ADA_MOVED: &str = "CN=Ada King,OU=IT,OU=Users,DC=contoso,DC=example";

fn header(op: u8) -> RequestHeader {
    RequestHeader {
        tenant: "contoso".into(),
        agent_key_id: KeyId([0; 8]),
        portal_key_id: KeyId([0; 8]),
        agent_id: "dc1-agent".into(),
        request_id: "req-identity".into(),
        operation: op,
        issued_at_ms: 0,
        expires_at_ms: 1,
    }
}

fn writeback(space: Arc<ConnectorSpace>, dir: &Path) -> Writeback {
    Writeback {
        tenant: "contoso".into(),
        space,
        events: Arc::new(EventLog::open(dir, 1 << 20, 1).unwrap()),
        enabled: true,
        limiter: AccountLimiter::with_clock(0, Arc::new(|| 0)),
    }
}

fn events(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn reset(w: &Writeback, anchor: Anchor, new: &str) -> ReplyBody {
    let body = RequestBody::reset(anchor, Password::new(new));
    w.apply(&header(operation::RESET_PASSWORD), &body).await
}

#[tokio::test]
async fn a_moved_account_is_reset_before_and_after_the_import_and_a_deleted_one_is_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("contoso.json");
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/forests/contoso.json");
    std::fs::copy(sample, &file).unwrap();
    let forest = EmbeddedDirectory::open("contoso", &file).unwrap();
    let space = Arc::new(ConnectorSpace::new(vec![Arc::new(forest.clone())]));
    space.import(|_, _| {}).await.unwrap();
    let w = writeback(Arc::clone(&space), tmp.path());
    let ada = Anchor::UserPrincipalName("ada@contoso.example".into());

    forest.move_user(ADA, ADA_MOVED).unwrap();
    let r = reset(&w, ada.clone(), "Moved-Before-Import-1").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    assert!(forest.check_password(ADA_MOVED, &Password::new("Moved-Before-Import-1")));

    space.import(|_, _| {}).await.unwrap();
    let r = reset(&w, ada.clone(), "Moved-After-Import-2").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    assert!(forest.check_password(ADA_MOVED, &Password::new("Moved-After-Import-2")));

    // Deleted, and the connector space not told yet: found gone on use.
    forest.delete_user(ADA_MOVED).unwrap();
    let r = reset(&w, ada.clone(), "Deleted-Account-3").await;
    assert_eq!(r.outcome, outcome::USER_NOT_FOUND, "{r:?}");
    assert_eq!(r.message, NOT_FOUND_MESSAGE);
    assert_eq!(
        space.resolve(&ada).await.err(),
        Some(Unresolved::NotFound),
        "the deleted account is forgotten"
    );
    assert!(
        events(tmp.path())
            .iter()
            .any(|e| e["event_id"] == ids::USER_NOT_FOUND && e["outcome"] == "USER_NOT_FOUND")
    );
}

/// A forest that cannot be used: every operation fails as `refusal`.
struct Broken {
    refusal: Refusal,
    account: Account,
}

#[tonic::async_trait]
impl Directory for Broken {
    fn forest(&self) -> &str {
        "contoso"
    }
    async fn import(&self, _: Option<u64>) -> Result<Imported, DirectoryError> {
        Ok(Imported {
            accounts: vec![self.account.clone()],
            deleted: Vec::new(),
            cursor: 1,
        })
    }
    async fn refresh(&self, account: &Account) -> Result<Option<Account>, DirectoryError> {
        Ok(Some(account.clone()))
    }
    async fn reset_password(
        &self,
        _: &Account,
        _: &Password,
        _: bool,
        _: bool,
    ) -> Result<(), Refusal> {
        Err(self.refusal.clone())
    }
    async fn change_password(
        &self,
        _: &Account,
        _: &Password,
        _: &Password,
    ) -> Result<(), Refusal> {
        Err(self.refusal.clone())
    }
    async fn unlock(&self, _: &Account) -> Result<(), Refusal> {
        Err(self.refusal.clone())
    }
    async fn policy(&self, _: &Account) -> Result<ResultantPolicy, Refusal> {
        Err(self.refusal.clone())
    }
    async fn effective_rights(&self) -> Result<Vec<ContainerRights>, DirectoryError> {
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn directory_text_reaches_the_event_log_never_the_reply() {
    // What Samba 4.17 answers for a modify of a DN that no longer exists.
    let dn = "CN=Ada Lovelace,OU=Staff,OU=Users,DC=contoso,DC=example";
    let text = format!(
        "forest contoso: result 32: 0000208D: NameErr: DSID-03100288, problem 2001 (NO_OBJECT), data 0, best match of: '{dn}' at ../../source4/dsdb/samdb/ldb_modules/objectclass.c:1384"
    );
    let secrets = [dn, "result 32", "0000208D", "source4", "objectclass.c"];
    for (refusal, says_nothing_changed) in [
        (Refusal::DirectoryUnavailable(text.clone()), true),
        (Refusal::WriteUnconfirmed(text.clone()), false),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let account = Account {
            forest: "contoso".into(),
            dn: dn.into(),
            sam_account_name: "ada".into(),
            user_principal_name: "ada@contoso.example".into(),
            object_guid: [1; 16],
            display_name: "Ada Lovelace".into(),
            enabled: true,
            usn_changed: 1,
        };
        let space = Arc::new(ConnectorSpace::new(vec![Arc::new(Broken {
            refusal,
            account,
        })]));
        space.import(|_, _| {}).await.unwrap();
        let w = writeback(space, tmp.path());
        let r = reset(
            &w,
            Anchor::UserPrincipalName("ada@contoso.example".into()),
            "Whatever-Passw0rd-1",
        )
        .await;
        assert_eq!(r.outcome, outcome::DIRECTORY_UNAVAILABLE);
        assert!(r.details.is_empty(), "{r:?}");
        for s in secrets {
            assert!(!r.message.contains(s), "{s:?} reached the reply: {r:?}");
        }
        assert_eq!(
            r.message.contains("nothing was changed"),
            says_nothing_changed
        );

        let events = events(tmp.path());
        let detail = events
            .iter()
            .find(|e| e["event_id"] == ids::DIRECTORY_CONFIGURATION_ERROR)
            .expect("the detail event");
        let message = detail["message"].as_str().unwrap();
        for s in secrets {
            assert!(
                message.contains(s),
                "{s:?} missing from the event: {message}"
            );
        }
        assert_eq!(detail["outcome"], "DIRECTORY_UNAVAILABLE");
    }
}
