//! The shared scenario table (tests/src/scenarios) against a real Samba
//! DC and against the embedded directory, through the whole relay: both
//! must answer what the table says, and so the same as each other.

use tests::scenarios::embedded::EmbeddedLab;
use tests::scenarios::{INITIAL, Lab, Setup, differences, mismatches, run};

use crate::dc::Dc;
use crate::lab::unique;

/// The lab in dc1: `OU=Scen-<tag>` delegated, `OU=Blocked` below it with a
/// protected DACL, the domain's policy (7, complexity, history 24).
struct SambaLab {
    dc: Dc,
    /// The lab OU's DN relative to the domain, once made.
    lab_rdn: String,
}

#[tonic::async_trait]
impl Lab for SambaLab {
    fn name(&self) -> &'static str {
        "samba"
    }

    async fn prepare(&mut self, users: &[(String, Setup)]) -> String {
        let dc = &self.dc;
        let tag = unique("");
        let lab_rdn = format!("OU=Scen-{tag}");
        let lab = format!("{lab_rdn},{}", dc.get("BASE_DN"));
        let blocked_rdn = format!("OU=Blocked,{lab_rdn}");
        dc.samba_tool(&["ou", "create", &lab]);
        dc.samba_tool(&["ou", "create", &format!("OU=Blocked,{lab}")]);
        // Protected before the delegation, as setup-delegation does: made
        // after it, "convert to explicit" would keep the grant there.
        dc.block_inheritance(&format!("OU=Blocked,{lab}"));
        dc.delegate(&lab);
        // Inherits the delegation: a move there keeps the rights.
        dc.samba_tool(&["ou", "create", &format!("OU=Moved,{lab}")]);
        let locked: Vec<&str> = users
            .iter()
            .filter(|(_, s)| *s == Setup::Locked)
            .map(|(sam, _)| sam.as_str())
            .collect();
        for (sam, setup) in users {
            let ou = match setup {
                Setup::Missing => continue,
                Setup::Blocked => &blocked_rdn,
                _ => &lab_rdn,
            };
            dc.samba_tool(&["user", "create", sam, INITIAL, &format!("--userou={ou}")]);
            if *setup == Setup::Disabled {
                dc.samba_tool(&["user", "disable", sam]);
            }
        }
        if !locked.is_empty() {
            // Locked the way AD locks: bad passwords past a threshold, here
            // a PSO's (the domain's threshold is left alone), with the
            // domain's other settings.
            let pso = format!("ScenLock{tag}");
            dc.samba_tool(&[
                "domain",
                "passwordsettings",
                "pso",
                "create",
                &pso,
                "20",
                "--min-pwd-length=7",
                "--complexity=on",
                "--history-length=24",
                "--min-pwd-age=0",
                "--account-lockout-threshold=2",
                "--account-lockout-duration=30",
                "--reset-account-lockout-after=30",
            ]);
            for sam in &locked {
                dc.samba_tool(&["domain", "passwordsettings", "pso", "apply", &pso, sam]);
                let dn = format!("CN={sam},{lab}");
                for _ in 0..3 {
                    let _ = dc.binds(&dn, "Wrong-Passw0rd-1").await;
                }
                let refused = dc
                    .binds(&dn, INITIAL)
                    .await
                    .expect_err("the right password no longer binds once locked");
                assert!(refused.contains("775"), "{sam} is locked: {refused}");
            }
        }
        self.lab_rdn = lab_rdn;
        dc.forest_section("lab")
    }

    async fn disturb(&mut self, sam: &str, setup: Setup) {
        match setup {
            Setup::Moved => self.dc.samba_tool(&[
                "user",
                "move",
                sam,
                &format!("OU=Moved,{},{}", self.lab_rdn, self.dc.get("BASE_DN")),
            ]),
            Setup::Deleted => self.dc.samba_tool(&["user", "delete", sam]),
            _ => {}
        }
    }

    fn upn(&self, sam: &str) -> String {
        format!("{sam}@{}", self.dc.get("DNS_DOMAIN"))
    }
}

#[tokio::test]
#[ignore = "needs Samba AD DCs: run scripts/test (see tests/tests/samba/main.rs)"]
async fn the_scenario_table_gives_the_same_outcomes_on_samba_and_embedded() {
    let mut samba = SambaLab {
        dc: Dc::load("dc1"),
        lab_rdn: String::new(),
    };
    let mut embedded = EmbeddedLab::new();
    let tag = unique("");
    let on_samba = run(&mut samba, &tag).await;
    let on_embedded = run(&mut embedded, &tag).await;
    let mut wrong = mismatches("samba", &on_samba);
    wrong.extend(mismatches("embedded", &on_embedded));
    wrong.extend(
        differences(&on_samba, &on_embedded)
            .into_iter()
            .map(|d| format!("samba vs embedded: {d}")),
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
