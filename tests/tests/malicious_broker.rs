//! The broker is the attacker: it holds the agents' sessions and chooses
//! every byte it sends them. Real agents (the library's envelope handler,
//! real TLS) must refuse each attack with its specific error and apply only
//! what a pinned portal sealed, once.

use envelope::body::outcome;
use envelope::{Anchor, KeyPair, Password, PendingReply, ReplyError, RequestBody, RequestHeader};
use proto::pb::{EnvelopeRefusal, Operation};
use proto::time::unix_ms;
use tests::malicious::{Answer, MaliciousBroker};
use tests::sealed::{SealedAgent, onboard};

fn seal(
    portal: &KeyPair,
    agent: &KeyPair,
    tenant: &str,
    request_id: &str,
    password: &str,
) -> (Vec<u8>, PendingReply) {
    seal_to(portal, agent, tenant, "dc-a", request_id, password)
}

/// Seals a reset addressed to agent `agent_id`.
fn seal_to(
    portal: &KeyPair,
    agent: &KeyPair,
    tenant: &str,
    agent_id: &str,
    request_id: &str,
    password: &str,
) -> (Vec<u8>, PendingReply) {
    let now = unix_ms();
    let header = RequestHeader {
        tenant: tenant.into(),
        agent_key_id: agent.public.key_id(),
        portal_key_id: portal.public.key_id(),
        agent_id: agent_id.into(),
        request_id: request_id.into(),
        operation: Operation::ResetPassword as i32 as u8,
        issued_at_ms: now,
        expires_at_ms: now + 120_000,
    };
    let body = RequestBody::reset(
        Anchor::UserPrincipalName("ada@contoso.example".into()),
        Password::new(password),
    );
    envelope::seal_request(
        portal,
        &agent.public,
        &header,
        &body,
        &mut envelope::os_rng(),
    )
    .expect("seal")
}

/// Starts an onboarded agent against the malicious broker and takes its session.
async fn attach(
    evil: &MaliciousBroker,
    onboarded: &tests::sealed::Onboarded,
    agent_id: &str,
    state: &std::path::Path,
) -> (SealedAgent, tests::malicious::HeldSession) {
    let any_key = sas::Key::generate().expect("key");
    let agent = SealedAgent::start(
        &evil.url(),
        &evil.ca_file,
        &any_key,
        agent_id,
        onboarded,
        state,
    )
    .await;
    let session = evil.next_session().await;
    assert_eq!(session.tenant, onboarded.tenant);
    (agent, session)
}

/// A refusal before the envelope was opened: an unsealed AgentError with
/// its typed refusal.
fn refused_with(answer: &Answer, expected: EnvelopeRefusal) {
    match answer {
        Answer::Error { refusal, message } => {
            assert_eq!(*refusal, expected, "{message}");
            assert!(
                !message.starts_with(expected.name()),
                "the code is typed, not in the text: {message:?}"
            );
        }
        Answer::Envelope(_) => panic!("expected a {expected:?} refusal, the agent answered"),
    }
}

/// A refusal after the envelope was decrypted: sealed to the portal, outcome
/// NOT_APPLIED with the refusal's name as its `reason`.
fn sealed_refusal(answer: &Answer, pending: &PendingReply, expected: EnvelopeRefusal) {
    match answer {
        Answer::Envelope(reply) => {
            let body = pending.open(reply).expect("a sealed refusal opens");
            assert_eq!(body.outcome, outcome::NOT_APPLIED, "{body:?}");
            assert_eq!(body.detail("reason"), Some(expected.name()), "{body:?}");
        }
        Answer::Error { refusal, message } => {
            panic!("expected a sealed {expected:?}, got an unsealed {refusal:?}: {message}")
        }
    }
}

#[tokio::test]
async fn a_compromised_broker_can_neither_read_forge_replay_redirect_nor_alter() {
    let evil = MaliciousBroker::start().await;
    let contoso = onboard("contoso");
    let fabrikam = onboard("fabrikam");
    let state_a = tempfile::tempdir().expect("state");
    let state_b = tempfile::tempdir().expect("state");
    let (agent_a, mut a) = attach(&evil, &contoso, "dc-a", state_a.path()).await;
    let (agent_b, mut b) = attach(&evil, &fabrikam, "dc-b", state_b.path()).await;

    // The legitimate request: applied once, answered with a sealed reply.
    let (genuine, pending) = seal(
        &contoso.portal,
        &contoso.agent_key,
        "contoso",
        "req-1",
        "Correct-Horse-7",
    );
    let reply = match a
        .relay("req-1", Operation::ResetPassword, genuine.clone())
        .await
    {
        Answer::Envelope(r) => r,
        Answer::Error { message, .. } => panic!("refused: {message}"),
    };
    // Reading: the broker holds only ciphertext, both ways.
    assert!(!genuine.windows(15).any(|w| w == b"Correct-Horse-7"));
    assert!(
        !reply.windows(8).any(|w| w == b"password"),
        "the reply's text is sealed"
    );
    assert_eq!(pending.open(&reply).expect("open reply").outcome, 0);

    // Altering the reply on its way back is detected by the portal.
    for i in (0..reply.len()).step_by(5) {
        let mut altered = reply.clone();
        altered[i] ^= 0x04;
        assert!(
            matches!(
                pending.open(&altered),
                Err(ReplyError::AuthenticationFailed | ReplyError::UnsupportedVersion(_))
            ),
            "reply byte {i}"
        );
    }

    // Replaying the recorded request: refused after opening, so sealed.
    sealed_refusal(
        &a.relay("req-1", Operation::ResetPassword, genuine.clone())
            .await,
        &pending,
        EnvelopeRefusal::Replayed,
    );

    // Redirecting tenant contoso's envelope to fabrikam's agent.
    let (for_contoso, pending_2) = seal(
        &contoso.portal,
        &contoso.agent_key,
        "contoso",
        "req-2",
        "Another-Pass-8",
    );
    refused_with(
        &b.relay("req-2", Operation::ResetPassword, for_contoso.clone())
            .await,
        EnvelopeRefusal::WrongTenant,
    );

    // Relabelling what the broker can see: caught after opening, sealed.
    sealed_refusal(
        &a.relay("req-X", Operation::ResetPassword, for_contoso.clone())
            .await,
        &pending_2,
        EnvelopeRefusal::RequestIdMismatch,
    );
    sealed_refusal(
        &a.relay("req-2", Operation::UnlockAccount, for_contoso.clone())
            .await,
        &pending_2,
        EnvelopeRefusal::OperationMismatch,
    );

    // Forging: the broker seals with a key of its own.
    let broker_key = KeyPair::generate(&mut envelope::os_rng());
    let (forged, _) = seal(
        &broker_key,
        &contoso.agent_key,
        "contoso",
        "req-3",
        "Evil-Pass-9",
    );
    refused_with(
        &a.relay("req-3", Operation::ResetPassword, forged.clone())
            .await,
        EnvelopeRefusal::UnknownSender,
    );
    // ...and claims the pinned portal's key id for it.
    let mut claimed = forged.clone();
    let at = 2 + "contoso".len() + 8;
    claimed[at..at + 8].copy_from_slice(&contoso.portal.public.key_id().0);
    refused_with(
        &a.relay("req-3", Operation::ResetPassword, claimed).await,
        EnvelopeRefusal::AuthenticationFailed,
    );

    // Altering single bytes of a genuine request.
    let (fresh, _) = seal(
        &contoso.portal,
        &contoso.agent_key,
        "contoso",
        "req-4",
        "Fresh-Pass-10",
    );
    for i in (0..fresh.len()).step_by(11) {
        let mut altered = fresh.clone();
        altered[i] ^= 0x40;
        match a.relay("req-4", Operation::ResetPassword, altered).await {
            Answer::Error { .. } => {}
            Answer::Envelope(_) => panic!("byte {i}: an altered envelope was applied"),
        }
    }

    // Only the one genuine request reached the directory, intact.
    assert_eq!(
        agent_a.applied.all(),
        vec![("req-1".to_owned(), "Correct-Horse-7".to_owned())]
    );
    assert!(agent_b.applied.all().is_empty());

    // The replay window survives an agent restart.
    agent_a.stop().await;
    let (agent_a, mut a) = attach(&evil, &contoso, "dc-a", state_a.path()).await;
    sealed_refusal(
        &a.relay("req-1", Operation::ResetPassword, genuine).await,
        &pending,
        EnvelopeRefusal::Replayed,
    );
    assert!(agent_a.applied.all().is_empty());
    agent_a.stop().await;
    agent_b.stop().await;
}

#[tokio::test]
async fn a_held_back_request_expires_and_the_refusal_reports_the_measured_skew() {
    let evil = MaliciousBroker::start().await;
    let contoso = onboard("contoso");
    let state = tempfile::tempdir().expect("state");
    let (agent, mut a) = attach(&evil, &contoso, "dc-a", state.path()).await;
    // The broker sat on this envelope past its validity and the allowance.
    let issued = unix_ms() - 10 * 60_000;
    let header = RequestHeader {
        tenant: "contoso".into(),
        agent_key_id: contoso.agent_key.public.key_id(),
        portal_key_id: contoso.portal.public.key_id(),
        agent_id: "dc-a".into(),
        request_id: "late-1".into(),
        operation: Operation::ResetPassword as i32 as u8,
        issued_at_ms: issued,
        expires_at_ms: issued + 120_000,
    };
    let body = RequestBody::reset(
        Anchor::UserPrincipalName("ada@contoso.example".into()),
        Password::new("Late-Pass-1"),
    );
    let (late, pending) = envelope::seal_request(
        &contoso.portal,
        &contoso.agent_key.public,
        &header,
        &body,
        &mut envelope::os_rng(),
    )
    .expect("seal");
    let answer = a.relay("late-1", Operation::ResetPassword, late).await;
    // Decrypted, then refused: sealed to the portal.
    sealed_refusal(&answer, &pending, EnvelopeRefusal::Expired);
    let Answer::Envelope(reply) = answer else {
        unreachable!()
    };
    let message = pending.open(&reply).expect("sealed").message;
    assert!(message.contains("allowance 60000 ms"), "{message}");
    assert!(
        message.contains("behind the broker"),
        "the measured skew is reported: {message}"
    );
    assert!(agent.applied.all().is_empty());
    agent.stop().await;
}

/// The broker delivers the envelope, the agent applies it and seals its
/// answer, and the broker tells the portal NO_AGENT_ONLINE instead. The SDK
/// marks that as the broker's word, and the portal does not tell the user
/// that nothing was changed.
#[tokio::test]
async fn an_invented_no_agent_online_after_delivery_is_only_the_brokers_word() {
    use portal::Task;
    use portal::outcomes::{Failure, Trouble, failure};
    use relay_client::connect::BrokerEndpoint;
    use relay_client::portal_client::PortalClient;
    use relay_client::sealed::{Provenance, SealedPortal};

    let evil = MaliciousBroker::start().await;
    let contoso = onboard("contoso");
    let state = tempfile::tempdir().expect("state");
    let (agent, mut a) = attach(&evil, &contoso, "dc-a", state.path()).await;
    let key = &contoso.agent_key.public;
    evil.offer_keys(vec![proto::pb::AgentKey {
        key_id: key.key_id().to_hex(),
        public_key: key.as_bytes().to_vec(),
        registered_unix_ms: 0,
        endorsements: Vec::new(),
    }]);
    evil.offer_agents(&["dc-a"]);
    let client = PortalClient::connect(
        &BrokerEndpoint::new(evil.url(), Some(&evil.ca_file)),
        "contoso",
        PortalClient::send_credential("contoso", sas::Key::generate().expect("key")),
    )
    .await
    .expect("connect");
    let sealed = SealedPortal::new(client, contoso.portal.clone(), vec![key.fingerprint()]);
    let submitting = tokio::spawn(async move {
        let body = RequestBody::reset(
            Anchor::UserPrincipalName("ada@contoso.example".into()),
            Password::new("Genuine-Pass-11"),
        );
        sealed
            .submit(
                "req-1",
                Operation::ResetPassword,
                &body,
                Some(std::time::Duration::from_secs(30)),
            )
            .await
    });
    let held = evil.next_submit().await;
    let delivered = a
        .relay(
            &held.request.request_id,
            Operation::ResetPassword,
            held.request.envelope.to_vec(),
        )
        .await;
    assert!(matches!(delivered, Answer::Envelope(_)), "{delivered:?}");
    held.answer(Err(proto::status(
        proto::Reason::NoAgentOnline,
        "no agent of tenant \"contoso\" is online",
        &[],
    )));
    let err = submitting
        .await
        .expect("task")
        .expect_err("the broker said NO_AGENT_ONLINE");
    assert_eq!(err.reason(), Some(proto::Reason::NoAgentOnline));
    assert_eq!(err.provenance(), Provenance::Broker);
    assert!(err.is_broker_word());
    // It was applied all the same.
    assert_eq!(
        agent.applied.all(),
        vec![("req-1".to_owned(), "Genuine-Pass-11".to_owned())]
    );
    // The portal's rendering says what is true.
    for task in [Task::Reset, Task::Change] {
        let shown = failure(&Trouble::Sealed(rebuild(&err)), task, true);
        let text = shown.text(portal::i18n::Lang::En).to_lowercase();
        assert!(!text.contains("nothing was changed"), "{text}");
        assert!(text.contains("could not confirm"), "{text}");
        assert!(text.contains("not connected"), "{text}");
        assert!(matches!(shown, Failure::TryAgain(_)), "{shown:?}");
    }
    agent.stop().await;
}

/// The same error again (SealedError is not Clone): the broker's status as
/// the SDK read it.
fn rebuild(err: &relay_client::sealed::SealedError) -> relay_client::sealed::SealedError {
    use relay_client::ClientError;
    use relay_client::sealed::SealedError;
    match err {
        SealedError::Relay(ClientError::Relay {
            reason,
            message,
            metadata,
        }) => SealedError::Relay(ClientError::Relay {
            reason: *reason,
            message: message.clone(),
            metadata: metadata.clone(),
        }),
        other => panic!("unexpected {other:?}"),
    }
}

/// The agents of a tenant share one key pair (the keyring is copied to each)
/// and keep their own replay windows: a broker delivering one envelope to
/// each of them would have it applied once per agent, were it not addressed
/// to one. Three agents over one directory: the named one applies it, the
/// other two refuse it unopened.
#[tokio::test]
async fn an_envelope_delivered_to_every_agent_of_the_tenant_is_applied_once() {
    let evil = MaliciousBroker::start().await;
    let contoso = onboard("contoso");
    let directory = std::sync::Arc::new(tests::sealed::Applied::default());
    let mut agents = Vec::new();
    let mut sessions = Vec::new();
    let mut states = Vec::new();
    for id in ["dc-1", "dc-2", "dc-3"] {
        let state = tempfile::tempdir().expect("state");
        let agent = SealedAgent::start_sharing(
            &evil.url(),
            &evil.ca_file,
            &sas::Key::generate().expect("key"),
            id,
            &contoso,
            state.path(),
            std::sync::Arc::clone(&directory),
        )
        .await;
        let session = evil.next_session().await;
        assert_eq!(session.agent_id, id);
        agents.push(agent);
        sessions.push(session);
        states.push(state);
    }
    let (envelope, pending) = seal_to(
        &contoso.portal,
        &contoso.agent_key,
        "contoso",
        "dc-2",
        "req-everywhere",
        "Once-Only-Pass-1",
    );
    let mut answers = Vec::new();
    for session in &mut sessions {
        answers.push(
            session
                .relay("req-everywhere", Operation::ResetPassword, envelope.clone())
                .await,
        );
    }
    refused_with(&answers[0], EnvelopeRefusal::WrongAgent);
    refused_with(&answers[2], EnvelopeRefusal::WrongAgent);
    let Answer::Envelope(reply) = &answers[1] else {
        panic!("the addressed agent refused: {:?}", answers[1]);
    };
    assert_eq!(pending.open(reply).expect("open reply").outcome, 0);
    // And again, in any order: nothing more is applied.
    for (k, session) in sessions.iter_mut().enumerate().rev() {
        let again = session
            .relay("req-everywhere", Operation::ResetPassword, envelope.clone())
            .await;
        match (k, &again) {
            // The addressee itself: a sealed NOT_APPLIED for this delivery.
            (1, Answer::Envelope(reply)) => {
                let body = pending.open(reply).expect("open the refusal");
                assert_eq!(body.outcome, outcome::NOT_APPLIED);
                assert_eq!(body.detail("reason"), Some("REPLAYED"));
            }
            (1, other) => panic!("the addressee answered {other:?}"),
            (_, other) => refused_with(other, EnvelopeRefusal::WrongAgent),
        }
    }
    assert_eq!(
        directory.all(),
        vec![("req-everywhere".to_owned(), "Once-Only-Pass-1".to_owned())],
        "applied exactly once, by the agent the envelope names"
    );
    for agent in agents {
        agent.stop().await;
    }
}
