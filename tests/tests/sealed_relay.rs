//! End-to-end envelopes through the real broker: onboarding with the real
//! `writeback-agent` binary, a portal that trusts only pinned or endorsed
//! agent keys, key rotation without downtime, and a full reset after which
//! the password is nowhere in the broker: not in its logs, its store files
//! or its process memory.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use envelope::body::outcome;
use envelope::{Anchor, KeyPair, Password, RequestBody};
use proto::pb::{self, Operation};
use relay_client::enrollment::EnrollmentBundle;
use relay_client::sealed::{SealedError, SealedPortal};
use sas::{KeySlot, Right};
use tests::agent_toml::AgentToml;
use tests::sealed::{Onboarded, SETUP_PASSWORD, SealedAgent, onboard};
use tests::{BrokerBuilder, BrokerProcess, Tenant, bin, write_key};
use writeback_agent::AgentConfig;
use writeback_agent::keyring::Keyring;
use writeback_agent::onboarding;

const PASSWORD: &str = "Correct-Horse-Battery-Staple-42";

fn reset(password: &str) -> RequestBody {
    RequestBody::reset(
        Anchor::UserPrincipalName("ada@contoso.example".into()),
        Password::new(password),
    )
}

/// An agent config for `tenant` at `broker`, keyring and state in `dir`.
fn agent_config(broker: &BrokerProcess, tenant: &Tenant, dir: &Path) -> AgentConfig {
    let listen = write_key(
        dir,
        "listen.key",
        &tenant.key(Right::Listen, KeySlot::Primary),
    );
    let password = dir.join("setup-password");
    std::fs::write(&password, SETUP_PASSWORD).expect("password file");
    let toml = AgentToml::new(
        &broker.url(),
        &broker.ca_file,
        &tenant.name,
        "dc01",
        &listen,
    )
    .path("key_file", &dir.join("agent.keys"))
    .path("setup_password_file", &password)
    .path("state_dir", &dir.join("state"))
    .line("key_overlap = \"1h\"");
    AgentConfig::from_toml(&toml.build()).expect("config")
}

/// Registers the onboarded agent's current key with the broker, as
/// `writeback-agent init` does, without starting an agent.
async fn register_agent_key(broker: &BrokerProcess, tenant: &Tenant, onboarded: &Onboarded) {
    let dir = tempfile::tempdir().expect("dir");
    let config = agent_config(broker, tenant, dir.path());
    let registrar = onboarding::Registrar::connect(&config)
        .await
        .expect("registrar");
    let ring = Keyring::load(&onboarded.keyring, SETUP_PASSWORD).expect("keyring");
    registrar.register(ring.current()).await.expect("register");
}

async fn sealed_portal(
    broker: &BrokerProcess,
    tenant: &Tenant,
    portal: &KeyPair,
    pinned: Vec<envelope::Fingerprint>,
) -> SealedPortal {
    SealedPortal::new(
        broker.portal(tenant, Right::Send).await,
        portal.clone(),
        pinned,
    )
}

#[tokio::test]
async fn the_portal_refuses_agent_keys_the_broker_substitutes() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let onboarded = onboard("contoso");
    register_agent_key(&broker, &tenant, &onboarded).await;

    let pinned = vec![onboarded.agent_key.public.fingerprint()];
    let portal = sealed_portal(&broker, &tenant, &onboarded.portal, pinned).await;
    let offered = broker
        .portal(&tenant, Right::Send)
        .await
        .configuration()
        .await
        .expect("config")
        .agent_keys;
    assert_eq!(
        portal.trusted_key(&offered).expect("trusted"),
        onboarded.agent_key.public
    );

    // Whoever controls the broker adds a key of its own, even one carrying a
    // genuine endorsement copied from elsewhere: the portal ignores it.
    let rogue = KeyPair::generate(&mut envelope::os_rng());
    let stolen_endorsement = envelope::endorse::endorse(
        &onboarded.agent_key,
        &KeyPair::generate(&mut envelope::os_rng()).public,
        &onboarded.portal.public,
        "contoso",
        1,
        &mut envelope::os_rng(),
    )
    .expect("endorse");
    let rogue_record = pb::AgentKey {
        key_id: rogue.public.key_id().to_hex(),
        public_key: rogue.public.as_bytes().to_vec(),
        registered_unix_ms: 0,
        endorsements: vec![pb::KeyEndorsement {
            portal_key_id: onboarded.portal.public.key_id().to_hex(),
            endorsement: stolen_endorsement,
        }],
    };
    let mut offered_with_rogue = offered.clone();
    offered_with_rogue.push(rogue_record.clone());
    assert_eq!(
        portal.trusted_key(&offered_with_rogue).expect("trusted"),
        onboarded.agent_key.public,
        "the newest key offered is the rogue one, but it is not trusted"
    );
    // Offering only its own key makes the portal refuse to seal at all.
    match portal.trusted_key(&[rogue_record]) {
        Err(SealedError::KeyNotTrusted { offered }) => {
            assert!(offered.contains(&rogue.public.key_id().to_hex()))
        }
        other => panic!("expected KeyNotTrusted, got {other:?}"),
    }
    // A key id that does not match the key's bytes is ignored as well.
    let mut mislabelled = offered[0].clone();
    mislabelled.public_key = rogue.public.as_bytes().to_vec();
    assert!(matches!(
        portal.trusted_key(&[mislabelled]),
        Err(SealedError::KeyNotTrusted { .. })
    ));
}

#[tokio::test]
async fn onboarding_is_idempotent_and_keys_rotate_without_downtime() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = agent_config(&broker, &tenant, dir.path());
    let portal_key = KeyPair::generate(&mut envelope::os_rng());
    let bundle = EnrollmentBundle::new("contoso", std::slice::from_ref(&portal_key.public));

    let first = onboarding::init(&config, &bundle, SETUP_PASSWORD)
        .await
        .expect("init");
    assert!(first.created);
    let again = onboarding::init(&config, &bundle, SETUP_PASSWORD)
        .await
        .expect("init again");
    assert!(!again.created);
    assert_eq!(
        again.key_id, first.key_id,
        "re-running onboarding keeps the key"
    );
    let config_reply = broker
        .portal(&tenant, Right::Send)
        .await
        .configuration()
        .await
        .expect("config");
    assert_eq!(config_reply.agent_keys.len(), 1);
    assert!(
        onboarding::init(&config, &bundle, "not the setup password")
            .await
            .is_err()
    );

    // The agent (library, real envelope handler reading the keyring file).
    let onboarded = tests::sealed::Onboarded {
        tenant: "contoso".into(),
        portal: portal_key.clone(),
        agent_key: Keyring::load(
            config.key_file.as_deref().expect("key file"),
            SETUP_PASSWORD,
        )
        .expect("keyring")
        .current()
        .pair
        .clone(),
        keyring: config.key_file.clone().expect("key file"),
        dir: tempfile::tempdir().expect("dir"),
    };
    let agent = SealedAgent::start(
        &broker.url(),
        &broker.ca_file,
        &tenant.key(Right::Listen, KeySlot::Primary),
        "dc01",
        &onboarded,
        &dir.path().join("state"),
    )
    .await;
    // No key cache: this test follows the trust decision request by request.
    let portal = sealed_portal(&broker, &tenant, &portal_key, vec![first.fingerprint])
        .await
        .with_key_cache(Duration::ZERO);
    let answer = portal
        .submit(
            "r-1",
            Operation::ResetPassword,
            &reset("Before-Rotation-1"),
            None,
        )
        .await
        .expect("submit");
    assert_eq!(answer.reply.outcome, outcome::SUCCESS);
    assert_eq!(answer.agent_key_id, first.key_id);

    // Seal one request to the current key, then rotate before sending it.
    let old_key = onboarded.agent_key.public.clone();
    let (sealed_to_old, pending_old) = portal
        .seal(
            "r-old",
            Operation::ResetPassword,
            &reset("During-Overlap-2"),
            &old_key,
            "dc01",
        )
        .expect("seal");
    let rotated = onboarding::rotate(&config, SETUP_PASSWORD, true)
        .await
        .expect("rotate");
    assert_ne!(rotated.key_id, first.key_id);

    // The portal trusts the new key through its endorsement and seals to it;
    // the running agent picks the new key up from the keyring file.
    let answer = portal
        .submit(
            "r-2",
            Operation::ResetPassword,
            &reset("After-Rotation-3"),
            None,
        )
        .await
        .expect("submit after rotation");
    assert_eq!(answer.agent_key_id, rotated.key_id);
    assert_eq!(answer.reply.outcome, outcome::SUCCESS);

    // During the overlap an envelope sealed to the old key still opens.
    let relayed = broker
        .portal(&tenant, Right::Send)
        .await
        .submit(
            "r-old",
            Operation::ResetPassword,
            "dc01",
            sealed_to_old,
            None,
        )
        .await
        .expect("old key still accepted");
    assert_eq!(
        pending_old.open(&relayed.envelope).expect("reply").outcome,
        outcome::SUCCESS
    );

    let applied: Vec<String> = agent.applied.all().into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        applied,
        ["Before-Rotation-1", "After-Rotation-3", "During-Overlap-2"]
    );

    // A second agent joins with the keyring and the setup password.
    let second = tempfile::tempdir().expect("dir");
    let second_config = agent_config(&broker, &tenant, second.path());
    let imported = onboarding::import(
        &second_config,
        config.key_file.as_deref().expect("key file"),
        SETUP_PASSWORD,
    )
    .expect("import");
    assert_eq!(imported.key_id, rotated.key_id);
    assert!(
        onboarding::import(
            &second_config,
            config.key_file.as_deref().expect("key file"),
            "wrong password here"
        )
        .is_err()
    );
    agent.stop().await;
}

/// Every copy of `needle` (UTF-8 and UTF-16LE) in the readable memory of `pid`.
fn memory_hits(pid: u32, needle: &str) -> usize {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .expect("open process memory (needs ptrace permission)");
    let utf16: Vec<u8> = needle.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut hits = 0;
    let mut scanned = 0usize;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') {
            continue;
        }
        let (start, end) = range.split_once('-').expect("range");
        let (start, end) = (
            u64::from_str_radix(start, 16).expect("hex"),
            u64::from_str_radix(end, 16).expect("hex"),
        );
        let len = (end - start) as usize;
        if len > 512 << 20 {
            continue;
        }
        let mut buf = vec![0u8; len];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        scanned += len;
        hits += buf
            .windows(needle.len())
            .filter(|w| *w == needle.as_bytes())
            .count();
        hits += buf
            .windows(utf16.len())
            .filter(|w| *w == utf16.as_slice())
            .count();
    }
    assert!(
        scanned > 1 << 20,
        "scanned too little memory to mean anything"
    );
    hits
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test]
async fn a_full_reset_leaves_no_password_in_the_broker() {
    let broker = BrokerBuilder::new().rust_log("trace").start().await;
    let tenant = broker.create_tenant("contoso").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = agent_config(&broker, &tenant, dir.path());
    let portal_key = KeyPair::generate(&mut envelope::os_rng());
    let bundle_path = dir.path().join("enrollment.json");
    std::fs::write(
        &bundle_path,
        serde_json::to_string(&EnrollmentBundle::new(
            "contoso",
            std::slice::from_ref(&portal_key.public),
        ))
        .expect("json"),
    )
    .expect("bundle");
    let toml_path = dir.path().join("agent.toml");
    AgentToml::new(
        &config.broker.first().to_string(),
        config.ca_file.as_ref().expect("ca"),
        "contoso",
        "dc01",
        &config.listen_key_file,
    )
    .path("key_file", config.key_file.as_ref().expect("key file"))
    .path(
        "setup_password_file",
        config.setup_password_file.as_ref().expect("password file"),
    )
    .path("state_dir", config.state_dir.as_ref().expect("state dir"))
    .write(&toml_path);

    // Onboarding with the real binary; it prints the fingerprint to pin.
    let init = std::process::Command::new(bin("writeback-agent"))
        .arg("--config")
        .arg(&toml_path)
        .args(["init", "--enrollment"])
        .arg(&bundle_path)
        .args([
            "--expect-portal-fingerprint",
            &portal_key.public.fingerprint().to_string(),
        ])
        .output()
        .expect("run init");
    let stdout = String::from_utf8_lossy(&init.stdout);
    assert!(
        init.status.success(),
        "init failed: {}{}",
        stdout,
        String::from_utf8_lossy(&init.stderr)
    );
    let fingerprint = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("key fingerprint"))
        .expect("fingerprint printed")
        .trim()
        .to_owned();
    let pinned = envelope::Fingerprint::parse(&fingerprint).expect("fingerprint");
    // The local admin command is in the agent's event log with who ran it,
    // and its key registration in the broker's audit trail.
    let state_dir = config.state_dir.as_ref().expect("state dir");
    let events = std::fs::read_to_string(state_dir.join("events/events.jsonl")).expect("events");
    let init_event: serde_json::Value = events
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|e: &serde_json::Value| e["event_id"] == 31100)
        .unwrap_or_else(|| panic!("no local command event: {events}"));
    assert_eq!(init_event["operation"], "init");
    assert_eq!(init_event["outcome"], "SUCCESS");
    assert!(init_event["actor"]["uid"].is_u64(), "{init_event}");
    assert!(init_event["actor"]["host"].is_string(), "{init_event}");
    let audit = std::fs::read_to_string(broker.data_dir().join("audit.jsonl")).expect("audit");
    assert!(
        audit.contains("\"rpc\":\"relay.v1.AgentGateway/RegisterKey\""),
        "{audit}"
    );

    // The agent process opens envelopes; it has no directory, so it answers
    // DIRECTORY_UNAVAILABLE, sealed.
    let mut agent = tokio::process::Command::new(bin("writeback-agent"))
        .arg("--config")
        .arg(&toml_path)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("agent");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
        agent.stdout.take().expect("stdout"),
    ));
    tests::await_line(
        &mut agent,
        &mut lines,
        "connected",
        &dir.path().join("none"),
    )
    .await;

    let portal = sealed_portal(&broker, &tenant, &portal_key, vec![pinned]).await;
    let answer = portal
        .submit(
            "full-reset-1",
            Operation::ResetPassword,
            &reset(PASSWORD),
            None,
        )
        .await
        .expect("submit");
    assert_eq!(answer.reply.outcome, outcome::DIRECTORY_UNAVAILABLE);
    assert_eq!(answer.agent_id, "dc01");

    // The password is nowhere in the broker: logs, store files, memory.
    assert!(
        !broker.logs().contains(PASSWORD),
        "password in the broker's logs"
    );
    assert!(
        files_containing(broker.dir(), PASSWORD.as_bytes()).is_empty(),
        "password in the broker's files"
    );
    assert_eq!(
        memory_hits(broker.pid(), PASSWORD),
        0,
        "password in the broker's memory"
    );
    // Nor is the outcome's text: the broker sees delivery status only.
    assert_eq!(memory_hits(broker.pid(), "no directory is configured"), 0);
    // The test's own scan must be able to find what is there: the tenant name is.
    assert!(
        memory_hits(broker.pid(), "contoso - AAD") > 0,
        "the memory scan finds known strings"
    );
    let _ = agent.start_kill();
}

/// Every kind of agent refusal reaches the Rust SDK typed, through the real
/// broker: the ones before decryption as AGENT_ERROR with the `refusal`
/// ErrorInfo entry (and GetOutcome returns the same), the ones after it
/// sealed as NOT_APPLIED.
#[tokio::test]
async fn every_refusal_reaches_the_sdk_typed_and_get_outcome_returns_it() {
    use proto::time::unix_ms;
    use relay_client::EnvelopeRefusal;
    use relay_client::sealed::Provenance;
    use tests::sealed::seal_reset;

    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let onboarded = onboard("contoso");
    register_agent_key(&broker, &tenant, &onboarded).await;
    let state = tempfile::tempdir().expect("state");
    let agent = SealedAgent::start(
        &broker.url(),
        &broker.ca_file,
        &tenant.key(Right::Listen, KeySlot::Primary),
        "dc01",
        &onboarded,
        state.path(),
    )
    .await;
    let client = broker.portal(&tenant, Right::Send).await;
    let agent_key = &onboarded.agent_key.public;
    let portal_key = &onboarded.portal;
    let timeout = Some(Duration::from_secs(10));

    // Refused before opening: unsealed, typed, the broker's word.
    let stranger = KeyPair::generate(&mut envelope::os_rng());
    let cases = [
        (
            "r-unknown-key",
            seal_reset(
                portal_key,
                &stranger.public,
                "contoso",
                "r-unknown-key",
                unix_ms(),
            )
            .0,
            EnvelopeRefusal::UnknownKey,
        ),
        (
            "r-wrong-tenant",
            seal_reset(
                portal_key,
                agent_key,
                "fabrikam",
                "r-wrong-tenant",
                unix_ms(),
            )
            .0,
            EnvelopeRefusal::WrongTenant,
        ),
        (
            "r-unknown-sender",
            seal_reset(
                &stranger,
                agent_key,
                "contoso",
                "r-unknown-sender",
                unix_ms(),
            )
            .0,
            EnvelopeRefusal::UnknownSender,
        ),
    ];
    for (id, envelope, expected) in cases {
        let err = client
            .submit(id, Operation::ResetPassword, "dc01", envelope, timeout)
            .await
            .expect_err("refused");
        assert_eq!(
            err.reason(),
            Some(relay_client::Reason::AgentError),
            "{err}"
        );
        assert_eq!(err.refusal(), Some(expected), "{err}");
        let relay_client::ClientError::Relay { metadata, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            metadata.get("refusal").map(String::as_str),
            Some(expected.name())
        );
        // GetOutcome returns the same, typed.
        let again = tests::await_outcome(&client, id)
            .await
            .expect_err("a refusal");
        assert_eq!(again.refusal(), Some(expected), "{again}");
        assert_eq!(again.to_string(), err.to_string());
    }

    // Refused after decryption: sealed to the portal, GetOutcome the same.
    let (expired, pending) = seal_reset(
        portal_key,
        agent_key,
        "contoso",
        "r-expired",
        unix_ms() - 600_000,
    );
    for answer in [
        client
            .submit(
                "r-expired",
                Operation::ResetPassword,
                "dc01",
                expired,
                timeout,
            )
            .await
            .expect("a sealed refusal is an answer"),
        tests::await_outcome(&client, "r-expired")
            .await
            .expect("kept"),
    ] {
        let body = pending.open(&answer.envelope).expect("sealed");
        assert_eq!(body.outcome, outcome::NOT_APPLIED);
        assert_eq!(body.detail("reason"), Some("EXPIRED"));
    }
    let (genuine, pending) = seal_reset(portal_key, agent_key, "contoso", "r-1", unix_ms());
    let first = client
        .submit(
            "r-1",
            Operation::ResetPassword,
            "dc01",
            genuine.clone(),
            timeout,
        )
        .await
        .expect("answered");
    assert_eq!(
        pending.open(&first.envelope).expect("open").outcome,
        outcome::SUCCESS
    );
    // The broker releases the request id a moment after answering.
    let began = std::time::Instant::now();
    let replayed = loop {
        match client
            .submit(
                "r-1",
                Operation::ResetPassword,
                "dc01",
                genuine.clone(),
                timeout,
            )
            .await
        {
            Err(e)
                if e.reason() == Some(relay_client::Reason::DuplicateRequestId)
                    && began.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => break other.expect("a sealed refusal is an answer"),
        }
    };
    let body = pending.open(&replayed.envelope).expect("sealed");
    assert_eq!(body.outcome, outcome::NOT_APPLIED);
    assert_eq!(body.detail("reason"), Some("REPLAYED"));

    // Through the SealedPortal: a fresh envelope for an applied request id.
    let portal = sealed_portal(&broker, &tenant, portal_key, vec![agent_key.fingerprint()]).await;
    let began = std::time::Instant::now();
    let answer = loop {
        match portal
            .submit("r-1", Operation::ResetPassword, &reset(PASSWORD), timeout)
            .await
        {
            Err(e)
                if e.reason() == Some(relay_client::Reason::DuplicateRequestId)
                    && began.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => break other.expect("a sealed answer"),
        }
    };
    assert_eq!(answer.provenance(), Provenance::Sealed);
    assert_eq!(
        answer.not_applied(),
        Some(EnvelopeRefusal::DuplicateRequestId)
    );
    let too_long = sealed_portal(&broker, &tenant, portal_key, vec![agent_key.fingerprint()])
        .await
        .with_validity(Duration::from_secs(3600))
        .submit("r-2", Operation::ResetPassword, &reset(PASSWORD), timeout)
        .await
        .expect("a sealed answer");
    assert_eq!(
        too_long.not_applied(),
        Some(EnvelopeRefusal::LifetimeTooLong)
    );
    // ...and an unsealed refusal, typed in the SealedError: a portal key the
    // agent has not pinned.
    let unpinned = sealed_portal(&broker, &tenant, &stranger, vec![agent_key.fingerprint()]).await;
    match unpinned
        .submit("r-3", Operation::ResetPassword, &reset(PASSWORD), timeout)
        .await
    {
        Err(e @ SealedError::Refused { .. }) => {
            assert_eq!(e.refusal(), Some(EnvelopeRefusal::UnknownSender), "{e}");
            assert_eq!(e.provenance(), Provenance::Broker);
            assert!(e.is_broker_word());
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(agent.applied.all().len(), 1, "only the first was applied");
    agent.stop().await;
}

/// The portal addresses each envelope to one agent online. When the broker
/// says the addressee is gone before anything reached it, the portal seals
/// the request again, under the same request id, to another agent online:
/// nothing fails, and each request is applied once.
#[tokio::test]
async fn a_request_whose_addressee_went_offline_is_resealed_to_another_agent() {
    let broker = BrokerBuilder::new().start().await;
    let tenant = broker.create_tenant("contoso").await;
    let dir = tempfile::tempdir().expect("dir");
    let config = agent_config(&broker, &tenant, dir.path());
    let portal_key = KeyPair::generate(&mut envelope::os_rng());
    let bundle = EnrollmentBundle::new("contoso", std::slice::from_ref(&portal_key.public));
    let first = onboarding::init(&config, &bundle, SETUP_PASSWORD)
        .await
        .expect("init");
    // Two agents with copies of one keyring, applying to one directory.
    let onboarded = tests::sealed::Onboarded {
        tenant: "contoso".into(),
        portal: portal_key.clone(),
        agent_key: Keyring::load(
            config.key_file.as_deref().expect("key file"),
            SETUP_PASSWORD,
        )
        .expect("keyring")
        .current()
        .pair
        .clone(),
        keyring: config.key_file.clone().expect("key file"),
        dir: tempfile::tempdir().expect("dir"),
    };
    let directory = std::sync::Arc::new(tests::sealed::Applied::default());
    let listen = tenant.key(Right::Listen, KeySlot::Primary);
    let mut agents = Vec::new();
    for id in ["dc01", "dc02"] {
        agents.push(
            SealedAgent::start_sharing(
                &broker.url(),
                &broker.ca_file,
                &listen,
                id,
                &onboarded,
                &dir.path().join(id),
                std::sync::Arc::clone(&directory),
            )
            .await,
        );
    }
    // The default key cache: the agents online are those of the first
    // request's configuration, a minute old at most.
    let portal = sealed_portal(&broker, &tenant, &portal_key, vec![first.fingerprint]).await;
    let answer = portal
        .submit("r-1", Operation::ResetPassword, &reset("Pass-One-1"), None)
        .await
        .expect("submit");
    assert_eq!(answer.reply.outcome, outcome::SUCCESS);

    // dc02 leaves; the portal still believes it online.
    agents.pop().expect("dc02").stop().await;
    let client = broker.portal(&tenant, Right::Send).await;
    for _ in 0..100 {
        if client
            .configuration()
            .await
            .expect("config")
            .agents_online
            .len()
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The portal takes turns between the equally loaded agents: one of the
    // next two requests is addressed to dc02 first, refused as offline, and
    // sealed again to dc01.
    for (id, password) in [("r-2", "Pass-Two-2"), ("r-3", "Pass-Three-3")] {
        let answer = portal
            .submit(
                id,
                Operation::ResetPassword,
                &reset(password),
                Some(Duration::from_secs(10)),
            )
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(answer.agent_id, "dc01", "{id}");
        assert_eq!(answer.reply.outcome, outcome::SUCCESS);
    }
    let metrics = broker.metrics().await;
    assert!(
        metrics.contains(
            "relay_requests_total{operation=\"reset_password\",outcome=\"no_agent_online\"} 1"
        ),
        "one request was addressed to the agent gone:\n{metrics}"
    );
    let applied: Vec<String> = directory.all().into_iter().map(|(id, _)| id).collect();
    assert_eq!(applied.len(), 3, "{applied:?}");
    assert!(applied.contains(&"r-1".to_owned()));
    assert_eq!(&applied[1..], ["r-2", "r-3"], "each applied once");
    for agent in agents {
        agent.stop().await;
    }
}
