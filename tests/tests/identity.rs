//! Which account a request acts on, through the broker and a real agent
//! process against an embedded forest changed under it on disk: a moved
//! user is reset where it now is, before and after the next import, and a
//! deleted one is USER_NOT_FOUND (as the Samba tests show AD does).

use envelope::Password;
use envelope::body::outcome;
use tests::deployment::{Deployment, upn};

const GRACE: &str = "CN=Grace Hopper,OU=Staff,OU=Users,DC=contoso,DC=example";
const GRACE_MOVED: &str = "CN=Grace Hopper,OU=IT,OU=Users,DC=contoso,DC=example";

#[tokio::test]
async fn a_moved_user_is_reset_where_it_is_and_a_deleted_one_is_not_found() {
    // The periodic import is an hour away: only a miss imports.
    let d = Deployment::start(&["contoso"], "import_interval = \"1h\"").await;
    let grace = || upn("grace@contoso.example");
    let r = d.reset(grace(), "Before-The-Move-1").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");

    d.forest("contoso").move_user(GRACE, GRACE_MOVED).unwrap();
    let r = d.reset(grace(), "Moved-Not-Imported-2").await;
    assert_eq!(r.outcome, outcome::SUCCESS, "{r:?}");
    let forest = d.forest("contoso");
    assert!(forest.check_password(GRACE_MOVED, &Password::new("Moved-Not-Imported-2")));

    // A miss runs the incremental import, which reads the move.
    let r = d
        .reset(upn("nobody@contoso.example"), "Whatever-Passw0rd-3")
        .await;
    assert_eq!(r.outcome, outcome::USER_NOT_FOUND, "{r:?}");
    let r = d.reset(grace(), "Moved-And-Imported-4").await;
    assert_eq!(
        r.outcome,
        outcome::SUCCESS,
        "one account, not several: {r:?}"
    );
    let forest = d.forest("contoso");
    assert!(forest.check_password(GRACE_MOVED, &Password::new("Moved-And-Imported-4")));

    forest.delete_user(GRACE_MOVED).unwrap();
    let r = d.reset(grace(), "After-Deletion-5").await;
    assert_eq!(r.outcome, outcome::USER_NOT_FOUND, "{r:?}");
    assert!(
        d.events().iter().filter(|e| e["event_id"] == 33002).count() >= 2,
        "USER_NOT_FOUND events: {:?}",
        d.events()
    );
    d.stop().await;
}
