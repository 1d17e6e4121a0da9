//! The scenario lab on the embedded directory: a forest file written from
//! scratch with the same layout and policy as the Samba lab (a delegated
//! OU, a child OU with a protected DACL, minimum length 7, complexity,
//! history 24, no minimum age).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use directory::embedded::EmbeddedDirectory;
use directory::embedded::verifier::make_verifier;
use proto::time::unix_ms;
use serde_json::{Value, json};

use super::{INITIAL, Lab, Setup};

const DOMAIN: &str = "DC=lab,DC=example";
const DNS: &str = "lab.example";

pub struct EmbeddedLab {
    dir: tempfile::TempDir,
}

impl EmbeddedLab {
    pub fn new() -> EmbeddedLab {
        EmbeddedLab {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.path().join("lab.json")
    }
}

impl Default for EmbeddedLab {
    fn default() -> Self {
        EmbeddedLab::new()
    }
}

fn guid() -> String {
    let b: [u8; 16] = std::array::from_fn(|_| fastrand_byte());
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6],
        b[7],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// Random enough for unique test GUIDs, without another dependency.
fn fastrand_byte() -> u8 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u8
}

fn user(dn: &str, sam: &str, usn: u64, password: &str) -> Value {
    json!({
        "dn": dn,
        "sam_account_name": sam,
        "user_principal_name": format!("{sam}@{DNS}"),
        "object_guid": guid(),
        "display_name": sam,
        "enabled": true,
        "pwd_last_set": unix_ms() - 2 * 86_400_000,
        "passwords": [make_verifier(password, sam.as_bytes())],
        "usn_changed": usn,
    })
}

#[tonic::async_trait]
impl Lab for EmbeddedLab {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn prepare(&mut self, users: &[(String, Setup)]) -> String {
        let service = format!("CN=svc-writeback,OU=Service,{DOMAIN}");
        let lab = format!("OU=Lab,{DOMAIN}");
        let blocked = format!("OU=Blocked,{lab}");
        let grant = |right: &str| json!({"type": "allow", "right": right, "trustee": service, "inheritable": true});
        let mut list = vec![user(
            &service,
            "svc-writeback",
            100,
            "Service-Passw0rd-2024",
        )];
        for (i, (sam, setup)) in users.iter().enumerate() {
            let ou = match setup {
                Setup::Missing => continue,
                Setup::Blocked => &blocked,
                _ => &lab,
            };
            let mut u = user(&format!("CN={sam},{ou}"), sam, 101 + i as u64, INITIAL);
            match setup {
                Setup::Disabled => u["enabled"] = json!(false),
                Setup::Locked => u["lockout_time"] = json!(unix_ms()),
                _ => {}
            }
            list.push(u);
        }
        let forest = json!({
            "_comment": "scenario lab (tests/src/scenarios)",
            "service_account": service,
            "highest_usn": 1000,
            "domains": [{
                "dns_name": DNS,
                "netbios_name": "LAB",
                "policy": {"min_length": 7, "complexity": true, "history_length": 24,
                           "min_age_secs": 0, "max_age_secs": 3_628_800},
            }],
            "ous": [
                {"dn": format!("OU=Service,{DOMAIN}")},
                {"dn": lab, "aces": [grant("reset-password"), grant("change-password"),
                                     grant("write-lockout-time"), grant("write-pwd-last-set")]},
                {"dn": blocked, "protected": true},
                {"dn": format!("OU=Moved,{lab}")},
            ],
            "users": list,
        });
        std::fs::write(
            self.file(),
            serde_json::to_vec_pretty(&forest).expect("json"),
        )
        .expect("write the lab forest");
        format!(
            "\n[[forests]]\nname = \"lab\"\nkind = \"embedded\"\npath = {:?}\n",
            self.file()
        )
    }

    async fn disturb(&mut self, sam: &str, setup: Setup) {
        // Another handle on the file, as an administrator's tool would be;
        // the agent re-reads the file when it changes.
        let forest = EmbeddedDirectory::open("lab", self.file()).expect("open the lab forest");
        let dn = format!("CN={sam},OU=Lab,{DOMAIN}");
        match setup {
            Setup::Moved => forest
                .move_user(&dn, &format!("CN={sam},OU=Moved,OU=Lab,{DOMAIN}"))
                .expect("move"),
            Setup::Deleted => forest.delete_user(&dn).expect("delete"),
            _ => {}
        }
    }

    fn upn(&self, sam: &str) -> String {
        format!("{sam}@{DNS}")
    }
}
