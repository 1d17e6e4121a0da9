//! Writes valid inputs into `<dir>/<target>/seed-<n>` (default dir:
//! `corpus`), so that fuzzing starts from inputs that pass every check:
//! sealed requests and replies that open with the targets' fixed keys,
//! encoded bodies, minted tokens, endorsements. Corpus directories are not committed;
//! `scripts/fuzz` runs this before fuzzing.

use std::path::PathBuf;

use relay_fuzz::{fixture, sample_replies, sample_requests};

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let f = fixture();
    let request_bodies: Vec<Vec<u8>> = sample_requests()
        .iter()
        .map(|(_, body)| body.encode().expect("valid").to_vec())
        .collect();
    let reply_bodies: Vec<Vec<u8>> = sample_replies()
        .iter()
        .map(|body| body.encode().expect("valid").to_vec())
        .collect();
    let tokens: Vec<Vec<u8>> = f.tokens().into_iter().map(String::into_bytes).collect();
    let sets: [(&str, &[Vec<u8>]); 6] = [
        ("open_request", &f.requests),
        ("open_reply", &f.replies),
        ("request_body", &request_bodies),
        ("reply_body", &reply_bodies),
        ("sas_token", &tokens),
        ("endorsement", &f.endorsements),
    ];
    for (target, seeds) in sets {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(target_dir.join(format!("seed-{i}")), seed)?;
        }
        println!("{}: {} seeds", target_dir.display(), seeds.len());
    }
    Ok(())
}
