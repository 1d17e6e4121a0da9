//! `writeback-agent doctor` against dc3, a domain of its own: every place
//! write-back is denied is found (a block two levels above the users, a
//! container that is not an OU, an explicit deny), the fixes it prints for
//! a Samba DC are run exactly as printed, and then everything works —
//! including for an OU created after the fix.

use directory::{Directory, DirectoryRight, Refusal};

use tests::deployment::Deployment;

use crate::dc::{Dc, pw};
use crate::lab::account;

const USER_CLASS: &str = "bf967aba-0de6-11d0-a285-00aa003049e2";

/// The four delegated rights, inherit-only onto user objects.
fn delegation(sid: &str) -> String {
    DirectoryRight::ALL
        .iter()
        .map(|r| {
            let access = match r {
                DirectoryRight::ResetPassword | DirectoryRight::ChangePassword => "CR",
                _ => "WP",
            };
            format!("(OA;CIIO;{access};{};{USER_CLASS};{sid})", r.guid())
        })
        .collect()
}

struct Tree {
    corp: String,
    west: String,
    sales: String,
    team_a: String,
    no_reset: String,
    legacy: String,
}

/// The fixture tree, under names of this run (the test leaves the domain
/// fixed, so a second run needs fresh places that are broken).
fn build(dc: &Dc, run: &str) -> (Tree, Vec<String>) {
    let base = dc.get("BASE_DN");
    let sid = dc.get("SERVICE_ACCOUNT_SID");
    let corp = format!("OU=Corp-{run},{base}");
    let west = format!("OU=Region-West,{corp}");
    let sales = format!("OU=Dept-Sales,{west}");
    let team_a = format!("OU=Team-A,{sales}");
    let no_reset = format!("OU=NoReset,{corp}");
    let legacy = format!("CN=Legacy-{run},{base}");
    for ou in [&corp, &west, &sales, &team_a, &no_reset] {
        dc.samba_tool(&["ou", "create", ou]);
    }
    dc.add_object(&legacy, "container");
    // Blocked before the delegation, as setup-delegation does on Executives.
    dc.block_inheritance(&west);
    dc.block_inheritance(&legacy);
    dc.samba_tool(&[
        "dsacl",
        "set",
        &format!("--objectdn={corp}"),
        &format!("--sddl={}", delegation(sid)),
    ]);
    dc.samba_tool(&[
        "dsacl",
        "set",
        &format!("--objectdn={no_reset}"),
        &format!(
            "--sddl=(OD;CI;CR;{};{USER_CLASS};{sid})",
            DirectoryRight::ResetPassword.guid()
        ),
    ]);
    let mut users = Vec::new();
    for (prefix, container) in [("ta", &team_a), ("nr", &no_reset), ("lg", &legacy)] {
        let name = format!("{prefix}{run}");
        let relative = container
            .strip_suffix(&format!(",{base}"))
            .expect("below the base");
        dc.samba_tool(&[
            "user",
            "create",
            &name,
            "Initial-Pass-2024!",
            &format!("--userou={relative}"),
        ]);
        users.push(format!("CN={name},{container}"));
    }
    (
        Tree {
            corp,
            west,
            sales,
            team_a,
            no_reset,
            legacy,
        },
        users,
    )
}

fn line_for<'a>(text: &'a str, dn: &str) -> &'a str {
    let dn = dn.to_lowercase();
    text.lines()
        .find(|l| l.trim_start().to_lowercase().starts_with(&dn))
        .unwrap_or_else(|| panic!("doctor lists {dn}: {text}"))
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba.rs)"]
async fn doctor_finds_every_denied_place_and_its_printed_samba_fixes_work() {
    let dc = Dc::load("dc3");
    let run = format!("{:x}", proto::time::unix_secs() & 0xff_ffff);
    let (tree, users) = build(&dc, &run);
    let (team_a_user, no_reset_user, legacy_user) = (&users[0], &users[1], &users[2]);
    let dir = dc.directory("doctor");
    // A fine-grained policy applied through a group: by default the service
    // account can read which PSO applies but none of its settings.
    let team_a_sam = team_a_user
        .strip_prefix("CN=")
        .and_then(|r| r.split(',').next())
        .expect("CN=<sam>,...")
        .to_owned();
    let (group, pso) = (format!("PsoGroup{run}"), format!("Doctor{run}"));
    dc.samba_tool(&["group", "add", &group]);
    dc.samba_tool(&["group", "addmembers", &group, &team_a_sam]);
    dc.samba_tool(&[
        "domain",
        "passwordsettings",
        "pso",
        "create",
        &pso,
        "9",
        "--min-pwd-length=9",
    ]);
    dc.samba_tool(&["domain", "passwordsettings", "pso", "apply", &pso, &group]);

    // (1) The refusal names the container, and where inheritance is blocked
    // (two levels up) or the deny that decides.
    let refusal = |r: Result<(), Refusal>| match r {
        Err(Refusal::PermissionDenied {
            right,
            container,
            blocked_at,
            denied_at,
        }) => (
            right,
            container.to_lowercase(),
            blocked_at.map(|b| b.to_lowercase()),
            denied_at.map(|d| d.to_lowercase()),
        ),
        other => panic!("expected permission denied, got {other:?}"),
    };
    let new = pw("Doctor-Reset-2024!");
    assert_eq!(
        refusal(
            dir.reset_password(&account(&dir, team_a_user).await, &new, false, false)
                .await
        ),
        (
            DirectoryRight::ResetPassword,
            tree.team_a.to_lowercase(),
            Some(tree.west.to_lowercase()),
            None
        )
    );
    assert_eq!(
        refusal(
            dir.reset_password(&account(&dir, legacy_user).await, &new, false, false)
                .await
        ),
        (
            DirectoryRight::ResetPassword,
            tree.legacy.to_lowercase(),
            Some(tree.legacy.to_lowercase()),
            None
        )
    );
    assert_eq!(
        refusal(
            dir.reset_password(&account(&dir, no_reset_user).await, &new, false, false)
                .await
        ),
        (
            DirectoryRight::ResetPassword,
            tree.no_reset.to_lowercase(),
            None,
            Some(tree.no_reset.to_lowercase())
        )
    );

    // (2) doctor lists each place with its user count and the reason, and
    // not Change Password, which every user object grants to Everyone.
    // A whole deployment (broker and agent), so that doctor's other checks
    // pass and its exit code speaks for the forest alone.
    let d = Deployment::start_with(
        tempfile::tempdir().expect("dir"),
        &dc.forest_section("doctor"),
        "",
    )
    .await;
    let doctor = || {
        let out = d.agent_cli(&["doctor"]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = doctor();
    println!("doctor before the fixes:\n{text}");
    assert_eq!(code, Some(1), "{text}");
    let team_a = line_for(&text, &tree.team_a);
    assert!(team_a.contains("(1 users)"), "{team_a}");
    assert!(
        team_a.to_lowercase().contains(&format!(
            "inheritance is blocked at {}",
            tree.west.to_lowercase()
        )),
        "{team_a}"
    );
    assert!(
        team_a.contains("missing Reset Password, Write lockoutTime, Write pwdLastSet;"),
        "no Change Password: {team_a}"
    );
    let legacy = line_for(&text, &tree.legacy);
    assert!(legacy.contains("(not an OU, 1 users)"), "{legacy}");
    assert!(legacy.contains("inheritance is blocked here"), "{legacy}");
    let no_reset = line_for(&text, &tree.no_reset);
    assert!(no_reset.contains("missing Reset Password;"), "{no_reset}");
    assert!(
        no_reset.contains(&format!(
            "Reset Password denied by (OD;CI;CR;{};{USER_CLASS};{})",
            DirectoryRight::ResetPassword.guid(),
            dc.get("SERVICE_ACCOUNT_SID")
        )),
        "{no_reset}"
    );
    for empty in [&tree.corp, &tree.west, &tree.sales] {
        let empty = empty.to_lowercase();
        assert!(
            text.lines()
                .all(|l| !l.trim_start().to_lowercase().starts_with(&empty)),
            "{empty} holds no users and is not listed: {text}"
        );
    }
    // The account is named as it is, for both kinds of DC.
    let who = format!("{}\\{}", dc.get("DOMAIN"), dc.get("SERVICE_ACCOUNT"));
    assert!(
        text.contains(&format!("/G \"{who}:CA;Reset Password;user\"")),
        "{text}"
    );
    assert!(!text.contains("<DOMAIN>"), "{text}");
    let policies = text
        .lines()
        .find(|l| l.contains("password policies readable"))
        .unwrap_or_else(|| panic!("doctor checks the policies: {text}"));
    assert!(
        policies.contains("FAIL") && policies.contains(&pso),
        "{policies}"
    );

    // (3) Every fix printed for a Samba DC, run exactly as printed, on "the
    // DC" (shims map the default smb.conf and sam.ldb to this test DC).
    let samba_fixes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("fix on a Samba DC: "))
        .collect();
    let west_grant = samba_fixes
        .iter()
        .find(|f| f.to_lowercase().contains(&tree.west.to_lowercase()))
        .unwrap_or_else(|| panic!("a grant where inheritance is blocked: {text}"));
    assert!(
        west_grant.starts_with("samba-tool dsacl set --objectdn="),
        "{west_grant}"
    );
    assert!(
        samba_fixes
            .iter()
            .all(|f| !f.to_lowercase().contains(&tree.team_a.to_lowercase())),
        "the grant goes where it lasts, not on Team-A: {samba_fixes:?}"
    );
    let removal = samba_fixes
        .iter()
        .find(|f| f.contains("| ldbmodify -H /var/lib/samba/private/sam.ldb"))
        .unwrap_or_else(|| panic!("the deny's removal: {text}"));
    assert!(
        !removal.contains("(OD;CI;CR;"),
        "the rewritten DACL lacks the deny: {removal}"
    );
    for fix in &samba_fixes {
        dc.run_on_the_dc(fix);
    }
    let (code, after) = doctor();
    assert_eq!(
        code,
        Some(0),
        "after the printed fixes:\n{after}\nbefore:\n{text}"
    );

    // The PSO is read now, so its users are told their real rules.
    let policy = dir
        .policy(&account(&dir, team_a_user).await)
        .await
        .expect("policy")
        .known()
        .expect("readable after the fix");
    assert_eq!(
        (policy.source.as_str(), policy.min_length),
        (pso.as_str(), 9)
    );

    // (4) Resets work in every container, and in an OU created after the
    // fix below Dept-Sales (the grant went where it covers it).
    let team_b = format!("OU=Team-B,{}", tree.sales);
    dc.samba_tool(&["ou", "create", &team_b]);
    let name = format!("tb{run}");
    let relative = team_b
        .strip_suffix(&format!(",{}", dc.get("BASE_DN")))
        .expect("below the base")
        .to_owned();
    dc.samba_tool(&[
        "user",
        "create",
        &name,
        "Initial-Pass-2024!",
        &format!("--userou={relative}"),
    ]);
    let team_b_user = format!("CN={name},{team_b}");
    for user in [team_a_user, no_reset_user, legacy_user, &team_b_user] {
        dir.reset_password(&account(&dir, user).await, &new, true, true)
            .await
            .unwrap_or_else(|r| panic!("{user}: {r}"));
        let must_change = dc
            .binds(user, "Doctor-Reset-2024!")
            .await
            .expect_err("must change at next logon");
        assert!(must_change.contains("773"), "{user}: {must_change}");
    }
    d.stop().await;
}
