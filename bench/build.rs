//! Generates the echo service of the direct_tonic scenario with the same
//! pure-Rust protobuf compiler the relay's own code uses, and records the
//! versions the benchmark reports: the resolved crates from the workspace's
//! Cargo.lock and the compiler.

use std::path::Path;

/// Crates whose versions shape the figures (transport, TLS, runtime, crypto).
const CRATES: &[&str] = &[
    "tonic",
    "hyper",
    "h2",
    "tokio",
    "rustls",
    "ring",
    "prost",
    "hpke",
    "async-nats",
    "redb",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/bench/v1/echo.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;

    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let versions: Vec<String> = CRATES
        .iter()
        .map(|name| format!("{name}={}", locked_version(&text, name).unwrap_or("?")))
        .collect();
    println!(
        "cargo:rustc-env=BENCH_CRATE_VERSIONS={}",
        versions.join(",")
    );

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    println!("cargo:rustc-env=BENCH_RUSTC_VERSION={}", version.trim());
    Ok(())
}

/// The version of the first `[[package]]` named `name` in a Cargo.lock.
fn locked_version<'a>(lock: &'a str, name: &str) -> Option<&'a str> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == wanted {
            return lines
                .next()?
                .strip_prefix("version = \"")?
                .strip_suffix('"');
        }
    }
    None
}
