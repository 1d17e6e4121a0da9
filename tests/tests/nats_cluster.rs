//! The NATS cluster harness (`tests/src/nats.rs`) is real: three Debian
//! `nats-server` processes on loopback form one JetStream cluster that
//! replicates a key-value bucket, survives `kill -9` of any node (the first
//! one too), routes request-reply across nodes through a queue group and
//! answers "no responders" at once; TLS and credentials on client
//! connections work. What the broker's cluster mode (issue 9) will rely on.
//!
//! Needs `nats-server` (scripts/nats/install).

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use tests::nats::{NatsCluster, create_kv_bucket};

/// How long a failover may take (a new stream leader after `kill -9`;
/// raft elections in nats-server take a few seconds).
const FAILOVER: Duration = Duration::from_secs(30);

fn names(nats: &NatsCluster, nodes: impl IntoIterator<Item = usize>) -> Vec<String> {
    nodes
        .into_iter()
        .map(|i| nats.server_name(i).to_owned())
        .collect()
}

async fn kv_store(client: &async_nats::Client, bucket: &str) -> kv::Store {
    jetstream::new(client.clone())
        .get_key_value(bucket)
        .await
        .expect("bucket")
}

/// Retries a JetStream operation until it succeeds, for up to [`FAILOVER`]
/// after `since`: after a node is lost or comes back, operations fail or
/// time out until the raft groups involved have settled on leaders.
async fn until_failed_over<T, E, F, Fut>(what: &str, since: Instant, mut operation: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        match operation().await {
            Ok(value) => return value,
            Err(e) => {
                assert!(
                    since.elapsed() < FAILOVER,
                    "{what}: still failing {FAILOVER:?} later: {e}"
                );
                // Some failures are immediate (no leader yet to answer):
                // pace the retries.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The next entry of a watch, within `within`.
async fn next_entry(watch: &mut kv::Watch, within: Duration) -> kv::Entry {
    tokio::time::timeout(within, watch.next())
        .await
        .expect("a watch entry in time")
        .expect("watch open")
        .expect("watch entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_full_mesh_that_outlives_the_first_node() {
    let mut nats = NatsCluster::start(3).await;
    eprintln!(
        "3-node NATS cluster ready in {:?}: {}",
        nats.started_in(),
        nats.client_url_list()
    );
    assert_eq!(nats.client_urls().len(), 3);
    for i in 0..3 {
        let others = names(&nats, (0..3).filter(|&j| j != i));
        assert_eq!(nats.route_peers(i).await, others, "routes of node {i}");
        let varz = nats.monitor(i, "/varz").await;
        assert_eq!(varz["server_name"], nats.server_name(i));
        assert_eq!(varz["cluster"]["name"], "relay-test");
        let jsz = nats.monitor(i, "/jsz").await;
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
    }

    // Nodes 1 and 2 were started with routes to node 0 only at first:
    // gossip must have connected them directly, so losing node 0 does not
    // split them.
    nats.kill9(0).await;
    assert!(
        nats.route_peers(1).await.contains(&"n2".to_owned()),
        "n1 and n2 lost each other with n0"
    );
    nats.await_ready().await;

    // Same name and store, new ports; the others learn its new route URL.
    let old_url = nats.client_url(0).to_owned();
    let began = Instant::now();
    nats.restart(0).await;
    eprintln!(
        "node 0 restarted and rejoined in {:?} ({old_url} -> {})",
        began.elapsed(),
        nats.client_url(0)
    );
    for i in 0..3 {
        let others = names(&nats, (0..3).filter(|&j| j != i));
        assert_eq!(nats.route_peers(i).await, others, "routes of node {i}");
    }
    let client = nats.connect(0).await;
    assert_eq!(client.server_info().server_name, "n0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_bucket_sees_updates_at_once_and_survives_a_node() {
    let mut nats = NatsCluster::start(3).await;
    let clients = [
        nats.connect(0).await,
        nats.connect(1).await,
        nats.connect(2).await,
    ];
    let js = jetstream::new(clients[0].clone());
    let bucket = create_kv_bucket(
        &js,
        kv::Config {
            bucket: "relay_config".into(),
            history: 5,
            num_replicas: 3,
            ..Default::default()
        },
    )
    .await
    .expect("create an R3 bucket through node 0");
    let status = bucket.status().await.expect("bucket status");
    assert_eq!(status.info.config.num_replicas, 3);
    let stores = [
        bucket,
        kv_store(&clients[1], "relay_config").await,
        kv_store(&clients[2], "relay_config").await,
    ];

    // A change through node 2 reaches a watcher on node 1 within a second.
    let mut watch = stores[1].watch("tenants.>").await.expect("watch on node 1");
    let began = Instant::now();
    stores[2]
        .put("tenants.contoso", "enabled".into())
        .await
        .expect("put through node 2");
    let entry = next_entry(&mut watch, Duration::from_secs(1)).await;
    eprintln!("put on n2 seen by a watch on n1 in {:?}", began.elapsed());
    assert_eq!(entry.key, "tenants.contoso");
    assert_eq!(&entry.value[..], b"enabled");

    // Kill the stream's leader, the hardest node to lose.
    let leader = stores[0]
        .status()
        .await
        .expect("bucket status")
        .info
        .cluster
        .and_then(|c| c.leader)
        .expect("stream leader");
    let victim = nats.index_of(&leader);
    let [a, b] = match victim {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    };
    nats.kill9(victim).await;
    let killed = Instant::now();
    // The survivors agree on a running meta leader (a new one if the victim
    // led the meta group too) and elect a new leader of the stream...
    nats.await_ready().await;
    eprintln!(
        "stream leader {leader} killed: survivors ready after {:?}",
        killed.elapsed()
    );
    // ...from then on a put goes through; a new consumer (the watch below)
    // may still time out for a moment: both are retried for a bounded time.
    let mut attempts = 0;
    let revision = until_failed_over("put through a survivor", killed, || {
        attempts += 1;
        stores[a].put("tenants.fabrikam", "enabled".into())
    })
    .await;
    eprintln!(
        "stream leader {leader} killed: put through {} accepted after {:?} ({attempts} attempts)",
        nats.server_name(a),
        killed.elapsed()
    );
    // The other survivor reads both the old and the new value.
    let mut history = until_failed_over("watch on the other survivor", killed, || {
        stores[b].watch_with_history("tenants.fabrikam")
    })
    .await;
    let entry = next_entry(&mut history, Duration::from_secs(5)).await;
    eprintln!(
        "stream leader {leader} killed: read through {} after {:?}",
        nats.server_name(b),
        killed.elapsed()
    );
    assert_eq!(entry.revision, revision);
    assert_eq!(&entry.value[..], b"enabled");
    let old = stores[b]
        .get("tenants.contoso")
        .await
        .expect("get through a survivor");
    assert_eq!(old.as_deref(), Some(&b"enabled"[..]));

    // Back with the same name and store: it catches up on what it missed.
    let began = Instant::now();
    nats.restart(victim).await;
    eprintln!("{leader} restarted and ready in {:?}", began.elapsed());
    let client = nats.connect(victim).await;
    let store = kv_store(&client, "relay_config").await;
    let mut history = until_failed_over("watch through the restarted node", began, || {
        store.watch_with_history("tenants.fabrikam")
    })
    .await;
    let entry = next_entry(&mut history, Duration::from_secs(5)).await;
    assert_eq!(entry.revision, revision);
    let status = store.status().await.expect("bucket status");
    let cluster = status.info.cluster.expect("cluster info");
    assert_eq!(cluster.replicas.len(), 2, "{cluster:?}");
    assert_eq!(status.info.state.messages, 2);
}

/// Answers every request on `subject` in queue group "agents" with the
/// node's name; returns once the subscription is registered on its node.
async fn responder(nats: &NatsCluster, node: usize, subject: &str) -> tokio::task::JoinHandle<()> {
    let client = nats.connect(node).await;
    let mut requests = client
        .queue_subscribe(subject.to_owned(), "agents".into())
        .await
        .expect("queue subscribe");
    client.flush().await.expect("flush");
    let name = nats.server_name(node).to_owned();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let reply = request.reply.expect("a request has a reply subject");
            client
                .publish(reply, name.clone().into())
                .await
                .expect("reply");
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_crosses_nodes_through_a_queue_group() {
    let nats = NatsCluster::start(3).await;
    let requester = nats.connect(0).await;
    let subject = "relay.contoso.request";

    // Subscriber on node 2, requester on node 0.
    let _on_n2 = responder(&nats, 2, subject).await;
    nats.await_interest(0, subject, 1).await;
    let reply = requester
        .request(subject, "reset".into())
        .await
        .expect("request from n0 answered on n2");
    assert_eq!(&reply.payload[..], b"n2");

    // A second member of the group on node 1: the work spreads over both.
    let _on_n1 = responder(&nats, 1, subject).await;
    nats.await_interest(0, subject, 2).await;
    let mut by_node = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..60 {
        let reply = requester
            .request(subject, "reset".into())
            .await
            .expect("request answered");
        *by_node
            .entry(String::from_utf8_lossy(&reply.payload).into_owned())
            .or_default() += 1;
    }
    eprintln!("60 requests from n0 answered by {by_node:?}");
    assert_eq!(
        by_node.keys().cloned().collect::<Vec<_>>(),
        ["n1", "n2"],
        "{by_node:?}"
    );

    // Nobody subscribed: "no responders" at once, not a timeout.
    let began = Instant::now();
    let error = requester
        .request("relay.nobody.request", "reset".into())
        .await
        .expect_err("no subscriber, no reply");
    assert_eq!(
        error.kind(),
        async_nats::client::RequestErrorKind::NoResponders,
        "{error}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_connect_over_tls_with_credentials() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = broker::tls::generate_dev_pki(&dir.path().join("pki"), &["127.0.0.1".to_owned()])
        .expect("dev pki");
    let nats = NatsCluster::builder(3)
        .tls(&pki.server_cert, &pki.server_key, &pki.ca_cert)
        .user("relay", "correct horse")
        .start()
        .await;
    eprintln!(
        "3-node NATS cluster with TLS ready in {:?}: {}",
        nats.started_in(),
        nats.client_url_list()
    );

    let requester = nats.connect(0).await;
    assert!(requester.server_info().tls_required);
    let subject = "relay.contoso.request";
    let _on_n2 = responder(&nats, 2, subject).await;
    nats.await_interest(0, subject, 1).await;
    let reply = requester
        .request(subject, "reset".into())
        .await
        .expect("request over TLS answered on n2");
    assert_eq!(&reply.payload[..], b"n2");

    // JetStream over TLS too.
    let js = jetstream::new(requester.clone());
    let bucket = create_kv_bucket(
        &js,
        kv::Config {
            bucket: "relay_config".into(),
            num_replicas: 3,
            ..Default::default()
        },
    )
    .await
    .expect("create an R3 bucket over TLS");
    bucket
        .put("tenants.contoso", "enabled".into())
        .await
        .expect("put over TLS");

    // Without the CA the server's certificate is not trusted; a wrong
    // password is refused.
    let connect = |options: async_nats::ConnectOptions| {
        let url = nats.client_url(1).to_owned();
        async move {
            tokio::time::timeout(Duration::from_secs(20), options.connect(url))
                .await
                .expect("a refused connection fails, it does not hang")
        }
    };
    connect(
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .user_and_password("relay".into(), "correct horse".into()),
    )
    .await
    .expect_err("a server certificate from an unknown CA is refused");
    connect(
        nats.connect_options()
            .user_and_password("relay".into(), "wrong".into()),
    )
    .await
    .expect_err("a wrong password is refused");
    connect(nats.connect_options())
        .await
        .expect("the right CA and password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_keeps_its_bucket_over_a_restart() {
    let mut nats = NatsCluster::start(1).await;
    let client = nats.connect(0).await;
    let bucket = create_kv_bucket(
        &jetstream::new(client),
        kv::Config {
            bucket: "relay_config".into(),
            ..Default::default()
        },
    )
    .await
    .expect("create a bucket");
    bucket
        .put("tenants.contoso", "enabled".into())
        .await
        .expect("put");

    nats.kill9(0).await;
    nats.restart(0).await;
    let client = nats.connect(0).await;
    let value = kv_store(&client, "relay_config")
        .await
        .get("tenants.contoso")
        .await
        .expect("get after the restart");
    assert_eq!(value.as_deref(), Some(&b"enabled"[..]));
}
