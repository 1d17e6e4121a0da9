//! The shared directory scenario table (tests/src/scenarios) against the
//! embedded directory, through the whole relay. The Samba suite runs the
//! same table against a real domain controller and compares the two.

use tests::scenarios::embedded::EmbeddedLab;
use tests::scenarios::{mismatches, run};

#[tokio::test]
async fn the_embedded_directory_answers_the_scenario_table() {
    let mut lab = EmbeddedLab::new();
    let answers = run(&mut lab, "e").await;
    let wrong = mismatches("embedded", &answers);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
