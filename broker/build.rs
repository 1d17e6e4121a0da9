//! Names the commit the broker is built from, for `relay_build_info`:
//! `RELAY_GIT_COMMIT` when set (a package build from a tarball), else
//! `git rev-parse --short HEAD`, else nothing (the metric says "unknown").
//! Never fails the build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=RELAY_GIT_COMMIT");
    if let Ok(commit) = std::env::var("RELAY_GIT_COMMIT") {
        println!("cargo:rustc-env=RELAY_GIT_COMMIT={commit}");
        return;
    }
    // Run again when HEAD moves: HEAD itself (another branch) and the
    // branch it points at (a new commit). Without these lines cargo would
    // run this script on every change to the crate instead; a path that
    // does not exist (a branch only in packed-refs) would make it run on
    // every build, so only existing ones are named.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for path in watched {
        if let Some(p) = git(&["rev-parse", "--git-path", &path])
            && std::path::Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(commit) = git(&["rev-parse", "--short", "HEAD"]) {
        println!("cargo:rustc-env=RELAY_GIT_COMMIT={commit}");
    }
}
