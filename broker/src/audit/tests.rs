use super::*;

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn call(rpc: &str) -> Call<'_> {
    Call {
        rpc,
        peer: Some("192.0.2.7:5555".parse().unwrap()),
    }
}

#[test]
fn a_change_is_one_line_with_its_actor_and_the_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = Audit::open(Some(path.clone()), "n1".into(), Family::default()).unwrap();
    let key = Proven {
        right: Right::Manage,
        slot: sas::KeySlot::Secondary,
        key_id: "0a1b2c3d".into(),
    };
    let actor = proven(key, Some(audit.token_id("t")));
    audit.done(
        call("relay.v1.Admin/SetWriteback"),
        Some("acme"),
        &actor,
        Some(serde_json::json!({"writeback": false})),
        &Ok::<(), RelayError>(()),
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let got = lines(&path);
    assert_eq!(got.len(), 1);
    let line = &got[0];
    assert_eq!(line["rpc"], "relay.v1.Admin/SetWriteback");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["actor"]["right"], "manage");
    assert_eq!(line["actor"]["key_slot"], "secondary");
    assert_eq!(line["actor"]["key_id"], "0a1b2c3d");
    assert_eq!(line["actor"]["token_id"].as_str().unwrap().len(), 16);
    assert_eq!(line["peer"], "192.0.2.7:5555");
    assert_eq!(line["node"], "n1");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["change"]["writeback"], false);
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn a_refusal_flood_from_one_source_is_bounded_counted_and_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let dropped = Family::<ReasonLabel, Counter>::default();
    let audit = Audit::open(Some(path.clone()), "n1".into(), dropped.clone()).unwrap();
    for _ in 0..1000 {
        audit.refused(
            call("relay.v1.Relay/Submit"),
            None,
            None,
            &RelayError::BadSignature,
        );
    }
    let got = lines(&path);
    assert_eq!(got.len(), limiter::BURST as usize);
    assert_eq!(got[0]["outcome"], "refused");
    assert_eq!(got[0]["reason"], "BAD_SIGNATURE");
    let label = ReasonLabel {
        reason: "rate_limited",
    };
    assert_eq!(dropped.get_or_create(&label).get(), 980);
    // Quiet long enough: one summary.
    assert!(
        audit
            .limiter
            .lock()
            .unwrap()
            .recovered(Instant::now())
            .is_empty(),
        "not quiet yet"
    );
    let later = Instant::now() + Duration::from_secs(30);
    let quiet = audit.limiter.lock().unwrap().recovered(later);
    assert_eq!(quiet, [(Some("192.0.2.7".parse().unwrap()), 980)]);
}

#[test]
fn reopen_writes_a_new_file_after_a_rename() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let audit = Audit::open(Some(path.clone()), "n1".into(), Family::default()).unwrap();
    let key = Proven {
        right: Right::Operator,
        slot: sas::KeySlot::Primary,
        key_id: "0a1b2c3d".into(),
    };
    let op = proven(key, None);
    let ok = Ok::<(), RelayError>(());
    audit.done(call("status/login"), None, &op, None, &ok);
    std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
    audit.reopen();
    audit.done(call("status/login"), None, &op, None, &ok);
    assert_eq!(lines(&path).len(), 1);
    assert_eq!(lines(&dir.path().join("audit.jsonl.1")).len(), 1);
    assert_eq!(
        lines(&path)[0]["actor"],
        serde_json::json!({"operator": true, "key_id": "0a1b2c3d"})
    );
}
