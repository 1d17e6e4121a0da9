//! Which crate may link what, by audience (issue 18), read from `cargo
//! tree` so that a dependency added anywhere in a crate's tree fails here:
//! a portal taking the client SDK must not compile the agent's LDAP, store
//! or prompts; the directory backends must not reach back into the relay;
//! the broker never links code that could open an envelope. scripts/test
//! runs the same checks before the long test run.

use std::collections::BTreeSet;
use std::path::Path;

/// Package names in `package`'s normal-dependency tree (itself included),
/// `depth` levels deep when given.
fn tree(package: &str, depth: Option<u32>) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"]);
    if let Some(depth) = depth {
        cmd.args(["--depth", &depth.to_string()]);
    }
    let out = cmd.output().expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn assert_links_none(package: &str, depth: Option<u32>, forbidden: &[&str], why: &str) {
    let deps = tree(package, depth);
    assert!(
        deps.contains(package),
        "cargo tree -p {package} listed {deps:?}"
    );
    let found: Vec<&&str> = forbidden.iter().filter(|f| deps.contains(**f)).collect();
    assert!(found.is_empty(), "{package} links {found:?}: {why}");
}

#[test]
fn the_client_sdk_links_nothing_of_the_agent() {
    assert_links_none(
        "relay-client",
        None,
        &[
            "ldap3",
            "redb",
            "rpassword",
            "clap",
            "directory",
            "writeback-agent",
        ],
        "a portal that takes the SDK would compile the agent's directory, store and prompts",
    );
}

#[test]
fn the_directory_does_not_reach_back_into_the_relay() {
    assert_links_none(
        "directory",
        None,
        &[
            "relay-client",
            "writeback-agent",
            "broker",
            "portal",
            "session",
        ],
        "the directory seam sits below the agent and knows nothing of sessions or brokers",
    );
    // tonic reaches it only through proto, which it takes for the one clock.
    assert_links_none(
        "directory",
        Some(1),
        &["tonic"],
        "the directory speaks no gRPC",
    );
}

#[test]
fn the_broker_links_no_envelope_cryptography() {
    assert_links_none(
        "broker",
        None,
        &["envelope", "hpke", "chacha20poly1305", "x25519-dalek"],
        "the broker must never be able to open an envelope",
    );
}
