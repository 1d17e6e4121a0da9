//! The service account binds with Kerberos (SASL GSSAPI over LDAPS) from a
//! keytab exported on the DC, which is also the realm's KDC: no password
//! is configured anywhere, and a reset through the relay succeeds. Over
//! LDAPS the bind negotiates no SASL security layer (TLS already protects
//! the connection) and carries the tls-server-end-point channel binding;
//! Samba 4.17 accepts that under its default `ldap server require strong
//! auth = yes`.

use envelope::body::outcome;
use tests::deployment::Deployment;

use crate::dc::Dc;
use crate::lab::unique;

/// The `[[forests]]` section binding as the service account's principal
/// with `keytab`.
fn kerberos_section(dc: &Dc, name: &str, keytab: &std::path::Path) -> String {
    format!(
        "\n[[forests]]\nname = {name:?}\nkind = \"ldap\"\nurl = {:?}\nca_file = {:?}\nbind_dn = {:?}\nkeytab_file = {keytab:?}\nprincipal = {:?}\nkrb5_conf = {:?}\nbase_dn = {:?}\n",
        dc.get("LDAPS_URL"),
        dc.get("CA_FILE"),
        dc.get("SERVICE_ACCOUNT_DN"),
        format!("{}@{}", dc.get("SERVICE_ACCOUNT"), dc.get("REALM")),
        dc.get("KRB5_CONF"),
        dc.get("BASE_DN"),
    )
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn a_reset_succeeds_bound_with_a_keytab_and_no_password() {
    let dc = Dc::load("dc1");
    let ou = dc.own_ou("Kerberos");
    let sam = unique("kb");
    let user = dc.create_user(&ou, &sam, "Created-For-Kerberos-1!");
    let dir = tempfile::tempdir().expect("dir");
    let keytab = dir.path().join("svc.keytab");
    let principal = format!("{}@{}", dc.get("SERVICE_ACCOUNT"), dc.get("REALM"));
    dc.samba_tool(&[
        "domain",
        "exportkeytab",
        &format!("--principal={principal}"),
        keytab.to_str().expect("utf-8"),
    ]);
    let section = kerberos_section(&dc, "kerberos", &keytab);
    assert!(!section.contains("bind_password_file"));
    let d = Deployment::start_with(dir, &section, "import_interval = \"1h\"").await;

    let reply = d.reset(dc.upn(&sam), "Kerberos-Reset-2024!").await;
    assert_eq!(reply.outcome, outcome::SUCCESS, "{reply:?}");
    dc.binds(&user, "Kerberos-Reset-2024!")
        .await
        .expect("the new password binds");

    // doctor: the keytab, the principal in it, a ticket, the clock.
    let out = d.agent_cli(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    for check in [
        "forest kerberos: kerberos keytab",
        "forest kerberos: kerberos clock skew",
        "forest kerberos: bind",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(check))
            .unwrap_or_else(|| panic!("doctor checks {check}: {text}"));
        assert!(line.starts_with("[ ok ]"), "{line}");
    }
    d.stop().await;
    dc.remove_ou(&ou);
}
