//! Several domain controllers per forest: a DC that refuses connections or
//! fails TLS is passed over for the next, the one that answered is asked
//! first afterwards, and doctor lists every DC with the one that answers.
//! The three test DCs are of three different domains, so "another DC of
//! the same domain" is a dead address, and a live DC whose certificate the
//! forest's CA does not sign (dc2, another domain's CA): the failures a
//! second DC of the domain would show when down or misconfigured. DCs are
//! also found through the SRV records of Samba's internal DNS.

use std::path::PathBuf;

use directory::ldap::{Credentials, LdapDirectory, LdapSettings, SrvLookup};
use directory::{Directory, Refusal};
use zeroize::Zeroizing;

use crate::dc::{Dc, pw};
use crate::lab::{account, unique};

/// An address where nothing listens: a port the kernel just handed out and
/// took back.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("ldaps://127.0.0.1:{port}")
}

fn directory(dc: &Dc, urls: Vec<String>) -> LdapDirectory {
    directory_with(dc, urls, None)
}

fn directory_with(dc: &Dc, urls: Vec<String>, srv: Option<SrvLookup>) -> LdapDirectory {
    LdapDirectory::new(
        "test",
        LdapSettings {
            urls,
            ca_file: PathBuf::from(dc.get("CA_FILE")),
            bind_dn: dc.get("SERVICE_ACCOUNT_DN").to_owned(),
            credentials: Credentials::Password(Zeroizing::new(
                dc.password("SERVICE_ACCOUNT_PASSWORD_FILE"),
            )),
            base_dn: Some(dc.get("BASE_DN").to_owned()),
            srv,
        },
    )
    .expect("ldap directory")
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn a_reset_goes_to_the_dc_that_answers_past_dead_and_untrusted_ones() {
    let dc = Dc::load("dc1");
    let untrusted = Dc::load("dc2").get("LDAPS_URL").to_owned();
    let real = dc.get("LDAPS_URL").to_owned();
    let dead = closed_url();
    let ou = dc.own_ou("Failover");
    let sam = unique("fo");
    let user = dc.create_user(&ou, &sam, "Created-For-Failover-1!");

    let dir = directory(&dc, vec![dead.clone(), untrusted.clone(), real.clone()]);
    let staff = account(&dir, &user).await;
    dir.reset_password(&staff, &pw("Failed-Over-Reset-1!"), false, false)
        .await
        .expect("reset past a dead DC and one whose certificate is not trusted");
    dc.binds(&user, "Failed-Over-Reset-1!")
        .await
        .expect("the new password binds");

    // Every DC is reported with why it did or did not answer.
    let probes = dir.probe_controllers().await;
    assert_eq!(probes.len(), 3);
    assert_eq!(probes[0].url, dead);
    let refused = probes[0].answer.as_ref().expect_err("nothing listens");
    assert!(refused.contains("cannot connect"), "{refused}");
    let tls = probes[1].answer.as_ref().expect_err("dc2's certificate");
    assert!(tls.to_lowercase().contains("certificate"), "{tls}");
    assert_eq!(
        probes[2].answer.as_deref(),
        Ok(format!("dc1.{}", dc.get("DNS_DOMAIN").to_lowercase()).as_str())
    );

    // A forest whose every DC fails says so, naming each.
    let none = directory(&dc, vec![dead.clone(), untrusted.clone()]);
    match none
        .reset_password(&staff, &pw("Never-Applied-2!"), false, false)
        .await
    {
        Err(Refusal::DirectoryUnavailable(why)) => {
            assert!(why.contains("no domain controller answered"), "{why}");
            assert!(why.contains(&dead) && why.contains(&untrusted), "{why}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    dc.binds(&user, "Failed-Over-Reset-1!")
        .await
        .expect("nothing was written through the failing DCs");
    dc.remove_ou(&ou);
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn doctor_lists_every_dc_and_the_one_that_answers() {
    let dc = Dc::load("dc1");
    let dead = closed_url();
    let real = dc.get("LDAPS_URL").to_owned();
    let scratch = tempfile::tempdir().expect("dir");
    let listen = tests::write_key(
        scratch.path(),
        "listen.key",
        &sas::Key::generate().expect("key"),
    );
    let config = scratch.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "broker = \"https://127.0.0.1:1\"\ntenant = \"contoso\"\nlisten_key_file = {listen:?}\n\n[[forests]]\nname = \"test\"\nkind = \"ldap\"\nurls = [{dead:?}, {real:?}]\nca_file = {:?}\nbind_dn = {:?}\nbind_password_file = {:?}\n",
            dc.get("CA_FILE"),
            dc.get("SERVICE_ACCOUNT_DN"),
            dc.get("SERVICE_ACCOUNT_PASSWORD_FILE"),
        ),
    )
    .expect("config");
    let out = std::process::Command::new(tests::bin("writeback-agent"))
        .arg("--config")
        .arg(&config)
        .arg("doctor")
        .output()
        .expect("doctor");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    let line = text
        .lines()
        .find(|l| l.contains("forest test: domain controllers"))
        .unwrap_or_else(|| panic!("doctor lists the forest's DCs: {text}"));
    assert!(line.starts_with("[FAIL]"), "{line}");
    assert!(line.contains("1 of 2 answer"), "{line}");
    assert!(
        line.contains(&format!("{dead} does not answer: {dead}: cannot connect")),
        "{line}"
    );
    assert!(
        line.contains(&format!(
            "{real} answers (dc1.{})",
            dc.get("DNS_DOMAIN").to_lowercase()
        )),
        "{line}"
    );
    // The forest still works through the DC that answers.
    let bind = text
        .lines()
        .find(|l| l.contains("forest test: bind"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(bind.starts_with("[ ok ]"), "{bind}");
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn dcs_are_found_through_dns_srv_records() {
    let dc = Dc::load("dc1");
    let domain = dc.get("DNS_DOMAIN").to_lowercase();
    // Samba's internal DNS serves the records every DC registers.
    let lookup = |nameserver: &str| SrvLookup {
        domain: domain.clone(),
        nameserver: Some(nameserver.parse().expect("address")),
    };
    let ou = dc.own_ou("Srv");
    let sam = unique("srv");
    let user = dc.create_user(&ou, &sam, "Created-For-Srv-1!");

    let dir = directory_with(
        &dc,
        Vec::new(),
        Some(lookup(&format!("{}:53", dc.get("IP")))),
    );
    let probes = dir.probe_controllers().await;
    let by_name = format!("ldaps://{}.{domain}:636", dc.get("HOST_NAME"));
    assert_eq!(probes.len(), 1, "{probes:?}");
    assert_eq!(probes[0].url, by_name);
    assert_eq!(
        probes[0].answer.as_deref(),
        Ok(format!("{}.{domain}", dc.get("HOST_NAME")).as_str())
    );
    let who = account(&dir, &user).await;
    dir.reset_password(&who, &pw("Found-In-Dns-1!"), false, false)
        .await
        .expect("reset on the DC DNS named");
    dc.binds(&user, "Found-In-Dns-1!").await.expect("binds");

    // DNS that does not answer: the listed DCs still serve, and doctor
    // says why DNS named none.
    let silent = closed_url().replace("ldaps://", "");
    let dir = directory_with(
        &dc,
        vec![dc.get("LDAPS_URL").to_owned()],
        Some(lookup(&silent)),
    );
    let probes = dir.probe_controllers().await;
    assert_eq!(probes.len(), 2, "{probes:?}");
    assert!(
        probes[0].url.starts_with("DNS _ldap._tcp.dc._msdcs."),
        "{probes:?}"
    );
    assert!(
        probes[0].answer.is_err() && probes[1].answer.is_ok(),
        "{probes:?}"
    );
    let who = account(&dir, &user).await;
    dir.reset_password(&who, &pw("Listed-After-Dns-2!"), false, false)
        .await
        .expect("reset on the listed DC");
    dc.remove_ou(&ou);
}
