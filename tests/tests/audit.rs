//! The audit trail (issue 21, point 1): one JSON line per admin change and
//! per refused call of any API, with who (right and key slot, or the
//! operator) and from where; never a token or a key; refusal floods
//! bounded per source; a new file after logrotate's rename and SIGHUP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proto::pb::admin_client::AdminClient as RawAdmin;
use proto::pb::agent_gateway_client::AgentGatewayClient;
use proto::pb::relay_client::RelayClient;
use proto::pb::{self, agent_frame};
use proto::time::unix_secs;
use relay_client::admin::AdminClient;
use relay_client::credential::Credential;
use sas::{Key, KeySlot, Right};
use serde_json::Value;
use tests::{BrokerBuilder, BrokerProcess, Tenant, http_request};
use tonic::Request;
use tonic::transport::Channel;

fn audit_path(broker: &BrokerProcess) -> PathBuf {
    broker.data_dir().join("audit.jsonl")
}

fn lines_of(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn with_token<T>(body: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(body);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.parse().expect("metadata"));
    }
    request
}

fn token(key: &Key, resource: &str, right: Right, expiry: u64) -> String {
    sas::mint(key, resource, right, expiry).expose().to_owned()
}

/// The lines a step added to the file.
struct Trail {
    path: PathBuf,
    seen: usize,
}

impl Trail {
    fn new(broker: &BrokerProcess) -> Trail {
        let path = audit_path(broker);
        let seen = lines_of(&path).len();
        Trail { path, seen }
    }

    /// Exactly one new line, returned.
    fn one(&mut self, what: &str) -> Value {
        let all = lines_of(&self.path);
        let new = &all[self.seen..];
        assert_eq!(
            new.len(),
            1,
            "{what}: expected one new audit line: {new:#?}"
        );
        self.seen = all.len();
        new[0].clone()
    }
}

fn assert_refused(line: &Value, rpc: &str, reason: &str, tenant: Option<&str>) {
    assert_eq!(line["rpc"], rpc, "{line}");
    assert_eq!(line["outcome"], "refused", "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    if let Some(tenant) = tenant {
        assert_eq!(line["tenant"], tenant, "{line}");
    }
    assert_common(line);
}

fn assert_common(line: &Value) {
    let peer = line["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "peer: {line}");
    assert!(
        !line["node"].as_str().unwrap_or_default().is_empty(),
        "{line}"
    );
    let time = line["time"].as_str().unwrap_or_default();
    assert!(time.ends_with('Z') && time.contains('T'), "{line}");
}

fn assert_actor_key(line: &Value, right: &str, slot: &str) {
    assert_eq!(line["actor"]["right"], right, "{line}");
    assert_eq!(line["actor"]["key_slot"], slot, "{line}");
}

/// No token or key used appears in the file, as text.
fn assert_no_secrets(path: &std::path::Path, secrets: &[String]) {
    let text = std::fs::read_to_string(path).expect("audit file");
    for secret in secrets {
        // The signature part of a token, and the whole.
        let sig = secret.rsplit("sig=").next().unwrap_or(secret);
        for needle in [secret.as_str(), sig] {
            assert!(
                needle.len() < 16 || !text.contains(needle),
                "a secret is in the audit file: {needle}"
            );
        }
    }
}

fn tenant_secrets(tenant: &Tenant) -> Vec<String> {
    tenant.all_keys_base64()
}

#[tokio::test]
async fn each_refusal_on_the_admin_api_and_the_status_page_is_one_line() {
    let broker = BrokerBuilder::new().start().await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let channel = broker.endpoint().connect().await.expect("channel");
    let admin = || RawAdmin::new(channel.clone());
    let exp = unix_secs() + 600;
    let op = broker.operator_key();
    let bogus_operator = token(&Key::generate().unwrap(), "*", Right::Operator, exp);
    let send_a = token(
        &a.key(Right::Send, KeySlot::Primary),
        "tenant-a",
        Right::Send,
        exp,
    );
    let manage_a = token(
        &a.key(Right::Manage, KeySlot::Secondary),
        "tenant-a",
        Right::Manage,
        exp,
    );
    let expired = token(
        &a.key(Right::Manage, KeySlot::Primary),
        "tenant-a",
        Right::Manage,
        unix_secs() - 5,
    );
    let operator = token(&op, "*", Right::Operator, exp);
    let mut trail = Trail::new(&broker);
    let set_writeback = |tenant: &str, t: Option<&str>| {
        with_token(
            pb::SetWritebackRequest {
                tenant: tenant.into(),
                enabled: false,
            },
            t,
        )
    };
    let rpc = "relay.v1.Admin/SetWriteback";

    admin()
        .set_writeback(set_writeback("tenant-a", Some(&bogus_operator)))
        .await
        .unwrap_err();
    let line = trail.one("bogus operator key");
    assert_refused(&line, rpc, "BAD_SIGNATURE", None);
    assert_eq!(
        line["actor"]["token_id"].as_str().map(str::len),
        Some(16),
        "{line}"
    );

    admin()
        .set_writeback(set_writeback("tenant-a", Some(&send_a)))
        .await
        .unwrap_err();
    let line = trail.one("a Send key on SetWriteback");
    assert_refused(&line, rpc, "WRONG_RIGHT", Some("tenant-a"));
    assert_actor_key(&line, "send", "primary");

    admin()
        .set_writeback(set_writeback("tenant-a", Some(&expired)))
        .await
        .unwrap_err();
    let line = trail.one("expired");
    assert_refused(&line, rpc, "TOKEN_EXPIRED", Some("tenant-a"));
    assert_actor_key(&line, "manage", "primary");

    admin()
        .set_writeback(set_writeback("tenant-b", Some(&manage_a)))
        .await
        .unwrap_err();
    let line = trail.one("a token of tenant A on tenant B");
    assert_refused(&line, rpc, "BAD_SIGNATURE", Some("tenant-b"));

    admin()
        .set_writeback(set_writeback("tenant-a", None))
        .await
        .unwrap_err();
    let line = trail.one("no token");
    assert_refused(&line, rpc, "MISSING_CREDENTIAL", None);
    assert!(line["actor"].is_null(), "{line}");

    admin()
        .list_agents(with_token(
            pb::ListAgentsRequest {
                tenant: "nobody".into(),
            },
            Some(&operator),
        ))
        .await
        .unwrap_err();
    let line = trail.one("unknown tenant");
    assert_refused(
        &line,
        "relay.v1.Admin/ListAgents",
        "UNKNOWN_TENANT",
        Some("nobody"),
    );
    assert_eq!(line["actor"]["operator"], true, "{line}");

    // The status page: a bad operator token in the header, at the login,
    // and an empty login.
    let addr = &broker.operator_addr;
    let r = http_request::get(addr, "/status", &[("Authorization", &bogus_operator)]).await;
    assert_eq!(r.status, 401);
    assert_refused(
        &trail.one("status page header"),
        "status/view",
        "BAD_SIGNATURE",
        None,
    );
    let r = http_request::post_form(addr, "/status/login", &[("token", &bogus_operator)]).await;
    assert_eq!(r.status, 401);
    assert_refused(
        &trail.one("status page login"),
        "status/login",
        "BAD_SIGNATURE",
        None,
    );
    http_request::post_form(addr, "/status/login", &[("token", "")]).await;
    assert_refused(
        &trail.one("empty login"),
        "status/login",
        "MISSING_CREDENTIAL",
        None,
    );
    let r = http_request::post_form(addr, "/status/login", &[("token", &send_a)]).await;
    assert_eq!(r.status, 403);
    let line = trail.one("a Send token at the login");
    assert_refused(&line, "status/login", "WRONG_RIGHT", None);
    assert_actor_key(&line, "send", "primary");
    // A good login is audited too, with the operator as its actor.
    let r = http_request::post_form(addr, "/status/login", &[("token", &operator)]).await;
    assert_eq!(r.status, 303);
    let line = trail.one("login");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["actor"]["operator"], true);

    let mut secrets = vec![
        bogus_operator,
        send_a,
        manage_a,
        expired,
        operator,
        op.to_base64().to_string(),
    ];
    secrets.extend(tenant_secrets(&a));
    secrets.extend(tenant_secrets(&b));
    assert_no_secrets(&audit_path(&broker), &secrets);
}

#[tokio::test]
async fn each_refusal_on_the_relay_and_agent_session_apis_is_one_line() {
    let broker = BrokerBuilder::new().start().await;
    let a = broker.create_tenant("tenant-a").await;
    let b = broker.create_tenant("tenant-b").await;
    let channel = broker.endpoint().connect().await.expect("channel");
    let relay = || RelayClient::new(channel.clone());
    let exp = unix_secs() + 600;
    let forged = token(&Key::generate().unwrap(), "tenant-a", Right::Send, exp);
    let send_a = token(
        &a.key(Right::Send, KeySlot::Primary),
        "tenant-a",
        Right::Send,
        exp,
    );
    let listen_a = token(
        &a.key(Right::Listen, KeySlot::Secondary),
        "tenant-a",
        Right::Listen,
        exp,
    );
    let expired = token(
        &a.key(Right::Send, KeySlot::Primary),
        "tenant-a",
        Right::Send,
        unix_secs() - 5,
    );
    let operator = token(&broker.operator_key(), "*", Right::Operator, exp);
    let mut trail = Trail::new(&broker);
    let ping = |tenant: &str, t: Option<&str>| {
        with_token(
            pb::PingRequest {
                tenant: tenant.into(),
            },
            t,
        )
    };
    let rpc = "relay.v1.Relay/Ping";

    relay()
        .ping(ping("tenant-a", Some(&forged)))
        .await
        .unwrap_err();
    assert_refused(&trail.one("forged"), rpc, "BAD_SIGNATURE", Some("tenant-a"));
    relay()
        .ping(ping("tenant-a", Some(&expired)))
        .await
        .unwrap_err();
    let line = trail.one("expired");
    assert_refused(&line, rpc, "TOKEN_EXPIRED", Some("tenant-a"));
    assert_actor_key(&line, "send", "primary");
    relay()
        .ping(ping("tenant-a", Some(&listen_a)))
        .await
        .unwrap_err();
    let line = trail.one("wrong right");
    assert_refused(&line, rpc, "WRONG_RIGHT", Some("tenant-a"));
    assert_actor_key(&line, "listen", "secondary");
    relay()
        .ping(ping("tenant-b", Some(&send_a)))
        .await
        .unwrap_err();
    assert_refused(
        &trail.one("wrong tenant"),
        rpc,
        "BAD_SIGNATURE",
        Some("tenant-b"),
    );
    relay().ping(ping("tenant-a", None)).await.unwrap_err();
    assert_refused(&trail.one("missing"), rpc, "MISSING_CREDENTIAL", None);
    relay()
        .get_configuration(with_token(
            pb::GetConfigurationRequest {
                tenant: "nobody".into(),
            },
            Some(&operator),
        ))
        .await
        .unwrap_err();
    let line = trail.one("unknown tenant");
    assert_refused(
        &line,
        "relay.v1.Relay/GetConfiguration",
        "UNKNOWN_TENANT",
        Some("nobody"),
    );
    assert_eq!(line["actor"]["operator"], true);

    // Agent sessions: the token is in the Hello.
    let hello = |tenant: &str, t: &str| pb::AgentFrame {
        frame: Some(agent_frame::Frame::Hello(pb::Hello {
            tenant: tenant.into(),
            agent_id: "dc01".into(),
            agent_version: "test".into(),
            token: t.to_owned(),
        })),
    };
    let session = "relay.v1.AgentGateway/OpenSession";
    let open = |frame: pb::AgentFrame| {
        let mut gateway = AgentGatewayClient::new(channel.clone());
        async move {
            // Refused before or after the stream opens: either way it ends.
            if let Ok(response) = gateway.open_session(tokio_stream::iter(vec![frame])).await {
                let mut stream = response.into_inner();
                while let Some(Ok(_)) = stream.next().await {}
            }
        }
    };
    open(hello("tenant-a", &send_a)).await;
    let line = trail.one("a Send token in a Hello");
    assert_refused(&line, session, "WRONG_RIGHT", Some("tenant-a"));
    assert_actor_key(&line, "send", "primary");
    let forged_listen = token(&Key::generate().unwrap(), "tenant-a", Right::Listen, exp);
    open(hello("tenant-a", &forged_listen)).await;
    let line = trail.one("a forged Hello");
    assert_refused(&line, session, "BAD_SIGNATURE", Some("tenant-a"));
    let listen_expired = token(
        &a.key(Right::Listen, KeySlot::Primary),
        "tenant-a",
        Right::Listen,
        unix_secs() - 5,
    );
    open(hello("tenant-a", &listen_expired)).await;
    let line = trail.one("an expired Hello");
    assert_refused(&line, session, "TOKEN_EXPIRED", Some("tenant-a"));
    assert_actor_key(&line, "listen", "primary");
    open(hello("tenant-b", &listen_a)).await;
    assert_refused(
        &trail.one("a Hello of tenant A on B"),
        session,
        "BAD_SIGNATURE",
        Some("tenant-b"),
    );
    open(hello("tenant-a", "")).await;
    assert_refused(
        &trail.one("a Hello without a token"),
        session,
        "MISSING_CREDENTIAL",
        Some("tenant-a"),
    );

    let mut secrets = vec![
        forged,
        forged_listen,
        send_a,
        listen_a,
        expired,
        operator,
        listen_expired,
    ];
    secrets.extend(tenant_secrets(&a));
    secrets.extend(tenant_secrets(&b));
    assert_no_secrets(&audit_path(&broker), &secrets);
}

#[tokio::test]
async fn each_admin_change_is_one_line_with_its_actor_and_no_secret() {
    let broker = BrokerBuilder::new().start().await;
    let mut trail = Trail::new(&broker);
    let tenant = broker.create_tenant("contoso").await;
    let line = trail.one("create tenant");
    assert_eq!(line["rpc"], "relay.v1.Admin/CreateTenant");
    assert_eq!(line["tenant"], "contoso");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["actor"]["operator"], true);
    assert_eq!(line["change"]["created"], true);
    assert_common(&line);

    let manage = Credential::new(
        "contoso",
        Right::Manage,
        tenant.key(Right::Manage, KeySlot::Primary),
    );
    let admin = AdminClient::connect(&broker.endpoint(), manage)
        .await
        .expect("admin");
    admin
        .set_writeback("contoso", false)
        .await
        .expect("set write-back");
    let line = trail.one("set write-back");
    assert_eq!(line["rpc"], "relay.v1.Admin/SetWriteback");
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["change"], serde_json::json!({"writeback": false}));
    assert_actor_key(&line, "manage", "primary");
    let manage_key = tenant.key(Right::Manage, KeySlot::Primary);
    assert_eq!(line["actor"]["key_id"], broker::auth::key_id(&manage_key));
    assert_common(&line);

    admin.revoke_agent("contoso", "dc01").await.expect("revoke");
    let line = trail.one("revoke agent");
    assert_eq!(line["rpc"], "relay.v1.Admin/RevokeAgent");
    assert_eq!(line["change"]["revoked_agent"], "dc01");
    assert_actor_key(&line, "manage", "primary");

    let rotated = admin
        .rotate_key("contoso", Right::Send, KeySlot::Secondary)
        .await
        .expect("rotate");
    let line = trail.one("rotate key");
    assert_eq!(line["rpc"], "relay.v1.Admin/RotateKey");
    assert_eq!(
        line["change"]["rotated_key"],
        serde_json::json!({"right": "send", "key_slot": "secondary"})
    );

    // A failed change is audited as failed, with its reason.
    admin.restore_agent("contoso", "dc02").await.unwrap_err();
    let line = trail.one("restore an agent never revoked");
    assert_eq!(line["outcome"], "failed");
    assert_eq!(line["reason"], "AGENT_NOT_FOUND");

    // Agent key registration and retirement, by a Listen key.
    let channel = broker.endpoint().connect().await.expect("channel");
    let listen = token(
        &tenant.key(Right::Listen, KeySlot::Primary),
        "contoso",
        Right::Listen,
        unix_secs() + 600,
    );
    let mut gateway = AgentGatewayClient::new(channel);
    let key = pb::AgentKey {
        key_id: "0123456789abcdef".into(),
        public_key: vec![7; 32],
        ..Default::default()
    };
    gateway
        .register_key(with_token(
            pb::RegisterKeyRequest {
                tenant: "contoso".into(),
                key: Some(key),
            },
            Some(&listen),
        ))
        .await
        .expect("register");
    let line = trail.one("register key");
    assert_eq!(line["rpc"], "relay.v1.AgentGateway/RegisterKey");
    assert_eq!(line["change"]["registered_key"], "0123456789abcdef");
    assert_actor_key(&line, "listen", "primary");
    gateway
        .retire_key(with_token(
            pb::RetireKeyRequest {
                tenant: "contoso".into(),
                key_id: "0123456789abcdef".into(),
            },
            Some(&listen),
        ))
        .await
        .expect("retire");
    let line = trail.one("retire key");
    assert_eq!(line["rpc"], "relay.v1.AgentGateway/RetireKey");
    assert_eq!(line["outcome"], "ok");

    let mut secrets = tenant_secrets(&tenant);
    secrets.push(rotated.0.to_base64().to_string());
    secrets.push(broker.operator_key().to_base64().to_string());
    secrets.push(listen);
    assert_no_secrets(&audit_path(&broker), &secrets);

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(audit_path(&broker))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the audit file is the broker's alone");
}

#[tokio::test]
async fn a_flood_of_bad_tokens_leaves_a_bounded_file_and_counts_what_it_dropped() {
    const FLOOD: usize = 10_000;
    let broker = BrokerBuilder::new().start().await;
    let channel: Channel = broker.endpoint().connect().await.expect("channel");
    let bad = token(
        &Key::generate().unwrap(),
        "tenant-a",
        Right::Send,
        unix_secs() + 600,
    );
    let started = Instant::now();
    futures_util::stream::iter(0..FLOOD)
        .map(|_| {
            let mut relay = RelayClient::new(channel.clone());
            let bad = bad.clone();
            async move {
                let request = with_token(
                    pb::PingRequest {
                        tenant: "tenant-a".into(),
                    },
                    Some(&bad),
                );
                relay.ping(request).await.unwrap_err();
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<()>>()
        .await;
    let elapsed = started.elapsed().as_secs() + 1;
    let lines = lines_of(&audit_path(&broker));
    // A burst of 20, then one a second, and a summary now and then.
    let bound = 20 + 2 * elapsed as usize + 2;
    assert!(
        lines.len() <= bound,
        "{} lines after {elapsed} s, bound {bound}",
        lines.len()
    );
    let metrics = broker.metrics().await;
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("relay_audit_dropped_total{reason=\"rate_limited\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no drop counter:\n{metrics}"));
    assert!(dropped as usize >= FLOOD - bound, "dropped {dropped}");
    // Recovered: one summary line says how many were not logged.
    let mut summary = None;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        summary = lines_of(&audit_path(&broker))
            .into_iter()
            .find(|l| l["rpc"] == "audit/rate_limited");
        if summary.is_some() {
            break;
        }
    }
    let summary = summary.expect("a summary line once the source fell quiet");
    assert!(
        summary["message"]
            .as_str()
            .unwrap()
            .contains("refusals from 127.0.0.1 not logged"),
        "{summary}"
    );
    assert_no_secrets(&audit_path(&broker), &[bad]);
}

#[tokio::test]
async fn sighup_after_a_rename_writes_a_new_file() {
    let broker = BrokerBuilder::new().start().await;
    broker.create_tenant("contoso").await;
    let path = audit_path(&broker);
    let rotated = broker.data_dir().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).expect("rename");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let admin = broker.admin().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no new audit file after SIGHUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
        admin.list_tenants().await.expect("list");
    }
    assert!(
        lines_of(&rotated)
            .iter()
            .any(|l| l["rpc"] == "relay.v1.Admin/CreateTenant")
    );
    admin
        .set_writeback("contoso", false)
        .await
        .expect("set write-back");
    let fresh = lines_of(&path);
    assert!(
        fresh
            .iter()
            .any(|l| l["rpc"] == "relay.v1.Admin/SetWriteback"),
        "{fresh:?}"
    );
}
