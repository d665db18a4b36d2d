//! Security on real processes (docs/security.md): a secured cluster
//! serves its clients, and every way in that is not allowed is refused
//! with its documented code while the node keeps serving. Certificates are
//! made at test time (`ringkv_server::certs`).
//!
//! Refusals at the TLS handshake never reach gRPC: the caller sees the
//! connection fail with a transport error, never a status from the node.
//! Refusals of a call are UNAUTHENTICATED (no valid credential), PERMISSION_DENIED (a
//! credential that does not allow this) or FAILED_PRECONDITION (another
//! cluster, the fault switch).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use ringkv_client::{Client, Security, TokenRequest};
use ringkv_proto::v1 as pb;
use ringkv_proto::v1::admin_client::AdminClient;
use ringkv_proto::v1::internal_client::InternalClient;
use ringkv_proto::v1::kv_client::KvClient;
use ringkv_server::certs::{Leaf, Usage};
use ringkv_tests::secure::{Secure, Secured};
use ringkv_tests::{cli_binary, free_port, python, ServerProcess, TestCluster};
use time::OffsetDateTime;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

/// A TLS channel to `address` trusting `ca`, presenting `identity`, and
/// expecting the server to be called `name`.
fn tls_channel(address: &str, ca: &[u8], identity: Option<(&[u8], &[u8])>, name: &str) -> Channel {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(name);
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{address}"))
        .expect("valid address")
        .tls_config(tls)
        .expect("valid TLS settings")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn plain_channel(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("valid address")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn read(s: &Secured, file: &str) -> Vec<u8> {
    std::fs::read(s.file(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii token");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn put(key: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec().into(),
        value: b"v".to_vec().into(),
        ..Default::default()
    }
}

fn get(key: &str) -> pb::GetRequest {
    pb::GetRequest {
        key: key.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

/// A refusal at the handshake: the call fails at the transport.
fn refused_at_handshake<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) {
    match result {
        Ok(answer) => panic!("{what}: answered {answer:?}"),
        Err(status) => assert!(
            // tonic reports a connection that failed in the handshake as
            // UNAVAILABLE, CANCELLED, or INTERNAL "h2 protocol error" (a
            // plaintext client reading the TLS alert as a frame), always
            // with the transport error as its source: the node sent no
            // gRPC status.
            std::error::Error::source(&status).is_some(),
            "{what}: expected a transport failure, got {status:?}"
        ),
    }
}

fn expect_code<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>, code: Code) {
    match result {
        Ok(answer) => panic!("{what}: answered {answer:?}, expected {code:?}"),
        Err(status) => assert_eq!(status.code(), code, "{what}: {status:?}"),
    }
}

/// The node still serves an authorised client.
async fn still_serves(cluster: &TestCluster, i: usize, what: &str) -> Result<()> {
    let client = cluster.client_via(i);
    client
        .put(
            format!("alive-after-{what}").into_bytes(),
            b"v".to_vec(),
            Default::default(),
        )
        .await
        .with_context(|| format!("node {i} stopped serving after: {what}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_decide_what_a_client_may_do_on_every_node() -> Result<()> {
    let cluster = TestCluster::start_secured(3, &[], &[], Secure::AUTH).await?;
    let s = cluster.secured.clone().context("secured")?;
    let ca = read(&s, "ca.crt");
    let root = cluster.client();
    let node = |i: usize| cluster.nodes[i].grpc.clone();
    let name = |i: usize| ringkv_tests::secure::node_name(&cluster.nodes[i].grpc);
    let kv = |i: usize| KvClient::new(tls_channel(&node(i), &ca, None, &name(i)));
    let admin = |i: usize| AdminClient::new(tls_channel(&node(i), &ca, None, &name(i)));

    // Tokens made on node 0 work on every node at once (pushed to the
    // live members before the create returns).
    let create = |name: &str, scopes: &[&str], prefix: Option<&str>, ttl: Option<Duration>| {
        root.create_token(TokenRequest {
            name: name.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.map(|p| p.as_bytes().to_vec().into()),
            ttl,
        })
    };
    let reader = create("reader", &["read"], None, None).await?.token;
    let writer = create("writer", &["write"], None, None).await?.token;
    let tenant = create("tenant", &["read", "write"], Some("tenant-a/"), None)
        .await?
        .token;
    let brief = create(
        "brief",
        &["read", "write"],
        None,
        Some(Duration::from_secs(1)),
    )
    .await?;
    let revoked = create("revoked", &["read", "write"], None, None).await?;
    for i in 0..3 {
        kv(i).put(with_token(put("k"), Some(&writer))).await?;
        kv(i).get(with_token(get("k"), Some(&reader))).await?;
        kv(i)
            .put(with_token(put("tenant-a/k"), Some(&tenant)))
            .await?;
        kv(i)
            .put(with_token(put("r"), Some(&revoked.token)))
            .await?;
    }
    ensure!(
        root.revoke_token(&revoked.info.as_ref().context("info")?.id)
            .await?
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let internal_on_client_port = InternalClient::new(tls_channel(&node(1), &ca, None, &name(1)));
    for i in 0..3 {
        let at = |what: &str| format!("node {i}: {what}");
        expect_code(
            &at("no token"),
            kv(i).put(with_token(put("k"), None)).await,
            Code::Unauthenticated,
        );
        expect_code(
            &at("malformed token"),
            kv(i).get(with_token(get("k"), Some("not-a-token"))).await,
            Code::Unauthenticated,
        );
        let forged = format!("{}x", &writer[..writer.len() - 1]);
        expect_code(
            &at("forged secret"),
            kv(i).put(with_token(put("k"), Some(&forged))).await,
            Code::Unauthenticated,
        );
        expect_code(
            &at("expired token"),
            kv(i).get(with_token(get("k"), Some(&brief.token))).await,
            Code::Unauthenticated,
        );
        expect_code(
            &at("revoked token"),
            kv(i).get(with_token(get("k"), Some(&revoked.token))).await,
            Code::Unauthenticated,
        );
        expect_code(
            &at("read token writing"),
            kv(i).put(with_token(put("k"), Some(&reader))).await,
            Code::PermissionDenied,
        );
        expect_code(
            &at("write token calling Admin"),
            admin(i)
                .members(with_token(pb::MembersRequest {}, Some(&writer)))
                .await,
            Code::PermissionDenied,
        );
        expect_code(
            &at("prefix token outside its prefix"),
            kv(i)
                .put(with_token(put("tenant-b/k"), Some(&tenant)))
                .await,
            Code::PermissionDenied,
        );
        expect_code(
            &at("the fault switch with auth on"),
            admin(i)
                .set_faults(with_token(
                    pb::SetFaultsRequest::default(),
                    Some(s.root_token()),
                ))
                .await,
            Code::FailedPrecondition,
        );
        still_serves(&cluster, i, "the token refusals").await?;
    }
    expect_code(
        "Internal on the client port",
        internal_on_client_port
            .clone()
            .get_layout(with_token(pb::GetLayoutRequest {}, Some(s.root_token())))
            .await,
        Code::PermissionDenied,
    );
    // Health checks need no token (probes).
    let health = tonic_health::pb::health_client::HealthClient::new(tls_channel(
        &node(0),
        &ca,
        None,
        &name(0),
    ));
    health
        .clone()
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await?;

    // The CLI: put and get through TLS with scoped tokens, a refusal's
    // exit code, and the token list showing the revocation.
    let endpoints = cluster.endpoints().join(",");
    let ca_path = s.file("ca.crt").display().to_string();
    let run = |token: &str, args: &[&str]| {
        std::process::Command::new(cli_binary())
            .args(["--endpoints", &endpoints, "--cacert", &ca_path])
            .env("RINGKV_TOKEN", token)
            .args(args)
            .output()
            .expect("running the CLI")
    };
    let out = run(&writer, &["put", "cli-key", "cli-value"]);
    ensure!(
        out.status.success(),
        "CLI put: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&reader, &["get", "cli-key"]);
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == "cli-value",
        "CLI get: {out:?}"
    );
    let out = run(&reader, &["put", "cli-key", "x"]);
    ensure!(
        out.status.code() == Some(8),
        "a refused put exits 8: {out:?}"
    );
    let out = run(
        s.root_token(),
        &["--output", "json", "auth", "token", "list"],
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let tokens = list["tokens"].as_array().context("token list")?;
    ensure!(tokens.len() == 5, "{list}");
    ensure!(
        tokens.iter().filter(|t| t["revoked"] == true).count() == 1,
        "{list}"
    );
    let unreachable_without_tls = std::process::Command::new(cli_binary())
        .args(["--endpoints", &node(0), "--token", &writer, "put", "k", "v"])
        .output()?;
    ensure!(
        !unreachable_without_tls.status.success(),
        "a plaintext CLI must not reach a TLS port"
    );
    still_serves(&cluster, 0, "a plaintext client").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_client_port_refuses_clients_without_a_valid_certificate() -> Result<()> {
    // The node requires client certificates of the client CA.
    let secure = Secure {
        auth: false,
        client_certs: true,
    };
    let cluster = TestCluster::start_secured(1, &[], &[], secure).await?;
    let s = cluster.secured.clone().context("secured")?;
    let ca = read(&s, "ca.crt");
    let address = cluster.nodes[0].grpc.clone();
    let name = ringkv_tests::secure::node_name(&address);
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let client_ca = s.authority("client-ca")?;
    let other_ca = ringkv_server::certs::Authority::new("someone else's CA")?;
    let leaf = || Leaf::new("mallory", &[], Usage::Client);
    let cases = [
        (
            "a certificate of another CA",
            Some(other_ca.issue(&leaf())?),
        ),
        (
            "an expired certificate",
            Some(client_ca.issue(&leaf().valid(now - 10 * day, now - day))?),
        ),
        (
            "a certificate not valid yet",
            Some(client_ca.issue(&leaf().valid(now + day, now + 10 * day))?),
        ),
        ("no certificate", None),
    ];
    for (what, issued) in &cases {
        let identity = issued
            .as_ref()
            .map(|i| (i.cert_pem.as_bytes(), i.key_pem.as_bytes()));
        let mut kv = KvClient::new(tls_channel(&address, &ca, identity, &name));
        refused_at_handshake(what, kv.get(get("k")).await);
        still_serves(&cluster, 0, what).await?;
    }
    let mut plaintext = KvClient::new(plain_channel(&address));
    refused_at_handshake("a plaintext client", plaintext.get(get("k")).await);
    // A valid client certificate gets in.
    let good = client_ca.issue(&leaf())?;
    let mut kv = KvClient::new(tls_channel(
        &address,
        &ca,
        Some((good.cert_pem.as_bytes(), good.key_pem.as_bytes())),
        &name,
    ));
    kv.get(get("k")).await?;
    let log = cluster.nodes[0].log();
    ensure!(
        log.contains("refused a TLS connection"),
        "the node logs refusals:\n{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_peer_port_takes_only_cluster_members_who_are_who_they_claim() -> Result<()> {
    let cluster = TestCluster::start_secured(2, &[], &[], Secure::AUTH).await?;
    let s = cluster.secured.clone().context("secured")?;
    let peer_ca = read(&s, "peer-ca.crt");
    let target = &cluster.nodes[0];
    let target_name = ringkv_tests::secure::node_name(&target.grpc);
    let other_name = ringkv_tests::secure::node_name(&cluster.nodes[1].grpc);
    let cluster_id = target.client().node_status(0).await?.cluster_id;
    let as_node = |stem: &str| -> (Vec<u8>, Vec<u8>) {
        (
            read(&s, &format!("{stem}.crt")),
            read(&s, &format!("{stem}.key")),
        )
    };
    let internal = |identity: Option<&(Vec<u8>, Vec<u8>)>| {
        InternalClient::new(tls_channel(
            &target.peer,
            &peer_ca,
            identity.map(|(c, k)| (c.as_slice(), k.as_slice())),
            &target_name,
        ))
    };
    let node1 = as_node(&format!("{other_name}-peer"));
    // The genuine node 1 is served.
    internal(Some(&node1))
        .get_layout(stamped(
            pb::GetLayoutRequest {},
            &cluster.ids[1],
            &cluster_id,
        ))
        .await?;
    // Node 1's certificate claiming to be node 0's id.
    expect_code(
        "a peer certificate claiming another member",
        internal(Some(&node1))
            .get_layout(stamped(
                pb::GetLayoutRequest {},
                &cluster.ids[0],
                &cluster_id,
            ))
            .await,
        Code::PermissionDenied,
    );
    // No sender named; a sender this node does not know asking for data;
    // an Admin call nodes never forward.
    expect_code(
        "an internal call naming no sender",
        internal(Some(&node1))
            .get_layout(pb::GetLayoutRequest {})
            .await,
        Code::PermissionDenied,
    );
    expect_code(
        "a stranger reading a key",
        internal(Some(&node1))
            .local_read(stamped(
                pb::LocalReadRequest {
                    key: b"k".to_vec().into(),
                },
                "0123456789abcdef",
                &cluster_id,
            ))
            .await,
        Code::PermissionDenied,
    );
    let mut peer_admin = AdminClient::new(tls_channel(
        &target.peer,
        &peer_ca,
        Some((node1.0.as_slice(), node1.1.as_slice())),
        &target_name,
    ));
    expect_code(
        "creating a token on the peer port",
        peer_admin
            .create_token(stamped(
                pb::CreateTokenRequest {
                    name: "sneaky".into(),
                    scopes: vec!["admin".into()],
                    ..Default::default()
                },
                &cluster.ids[1],
                &cluster_id,
            ))
            .await,
        Code::PermissionDenied,
    );
    // Gossip whose sender entry names someone the certificate does not.
    let stranger = "0123456789abcdef".to_string();
    let gossip = |name: &str| pb::GossipRequest {
        cluster_name: "ringkv".into(),
        digests: vec![],
        entries: vec![pb::MemberEntry {
            id: stranger.clone(),
            name: name.into(),
            address: "127.0.0.1:1".into(),
            peer_address: "127.0.0.1:1".into(),
            status: "joining".into(),
            generation: 1,
            weight: 1,
            zone: "default".into(),
            ..Default::default()
        }],
    };
    expect_code(
        "gossip claiming a name the certificate does not carry",
        internal(Some(&node1))
            .gossip(stamped(gossip("test-nobody"), &stranger, &cluster_id))
            .await,
        Code::PermissionDenied,
    );
    // A node of another cluster, even with a certificate of this CA.
    let intruder = s.authority("peer-ca")?.issue(&Leaf::new(
        "intruder",
        &["intruder".to_string()],
        Usage::Peer,
    ))?;
    let intruder = (
        intruder.cert_pem.into_bytes(),
        intruder.key_pem.into_bytes(),
    );
    expect_code(
        "gossip from another cluster",
        internal(Some(&intruder))
            .gossip(stamped(
                gossip("intruder"),
                &stranger,
                "0000000000000000000000000000beef",
            ))
            .await,
        Code::FailedPrecondition,
    );
    // No certificate, a client certificate, a certificate of another CA.
    let client = as_node("client-tester");
    let foreign =
        ringkv_server::certs::Authority::new("another cluster's CA")?.issue(&Leaf::new(
            &target_name,
            std::slice::from_ref(&target_name),
            Usage::Peer,
        ))?;
    let foreign = (foreign.cert_pem.into_bytes(), foreign.key_pem.into_bytes());
    for (what, identity) in [
        ("a peer with no certificate", None),
        ("a client certificate on the peer port", Some(&client)),
        ("a certificate of another CA", Some(&foreign)),
    ] {
        refused_at_handshake(
            what,
            internal(identity)
                .get_layout(stamped(
                    pb::GetLayoutRequest {},
                    &cluster.ids[1],
                    &cluster_id,
                ))
                .await,
        );
    }
    let mut plaintext = InternalClient::new(plain_channel(&target.peer));
    refused_at_handshake(
        "a plaintext peer",
        plaintext.get_layout(pb::GetLayoutRequest {}).await,
    );
    replica_stream_checks_its_dialler(&s, target, &other_name, &cluster.ids, &cluster_id).await?;
    still_serves(&cluster, 0, "the peer refusals").await?;
    let members = cluster.client().members().await?;
    ensure!(
        members.len() == 2
            && !members
                .iter()
                .any(|m| m.name == "intruder" || m.name == "test-nobody"),
        "no forged member got in: {members:?}"
    );
    Ok(())
}

/// The replica stream (not gRPC) on `target`'s peer port, dialled under
/// mutual TLS with node 1's certificate: served when the hello names node
/// 1, refused when it claims node 0 or a stranger, and refused at the
/// handshake without a certificate.
async fn replica_stream_checks_its_dialler(
    s: &Secured,
    target: &ServerProcess,
    node1_name: &str,
    ids: &[String],
    cluster_id: &str,
) -> Result<()> {
    use ringkv_peer::Failure;
    use ringkv_server::transport::frames::{Dialler, Link, Settings};
    let tls = |cert: Option<&str>| -> Result<_> {
        let config = ringkv_node::config::TlsConfig {
            peer_ca: Some(s.file("peer-ca.crt")),
            peer_cert: cert.map(|stem| s.file(&format!("{stem}.crt"))),
            peer_key: cert.map(|stem| s.file(&format!("{stem}.key"))),
            ..Default::default()
        };
        Ok(ringkv_server::tls::Tls::load(&config, node1_name)?)
    };
    let link = |from: &str, tls| {
        let settings = Settings {
            hello: pb::FrameHello {
                from: from.to_string(),
                to: ids[0].clone(),
                cluster: cluster_id.to_string(),
            },
            max_batch_bytes: 1 << 20,
            max_item_bytes: 1 << 20,
            max_frame: 4 << 20,
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(5),
        };
        let dialler = Dialler {
            address: target.peer.clone(),
            tls,
        };
        Link::start(dialler, settings, None)
    };
    let read = || pb::BatchItem {
        op: Some(pb::batch_item::Op::Read(pb::LocalReadRequest {
            key: b"k".to_vec().into(),
        })),
    };
    let timeout = Duration::from_secs(10);
    let node1_tls = tls(Some(&format!("{node1_name}-peer")))?;
    link(&ids[1], node1_tls.clone())
        .call(read(), 1, timeout)
        .await
        .context("node 1 reading over the replica stream")?;
    for (what, from) in [
        ("a replica stream claiming another member", ids[0].as_str()),
        ("a replica stream from a stranger", "0123456789abcdef"),
    ] {
        let refused = link(from, node1_tls.clone())
            .call(read(), 1, timeout)
            .await
            .err()
            .with_context(|| format!("{what} was served"))?;
        ensure!(
            refused.failure == Failure::Refused(ringkv_core::error::Code::PermissionDenied),
            "{what}: {refused}"
        );
    }
    // Without a certificate the handshake fails: nothing was sent.
    let refused = link(&ids[1], tls(None)?)
        .call(read(), 1, timeout)
        .await
        .err()
        .context("a replica stream without a certificate was served")?;
    ensure!(
        refused.failure == Failure::NotSent,
        "a replica stream without a certificate: {refused}"
    );
    Ok(())
}

/// An internal call as a node sends it: its sender and cluster in the
/// headers.
fn stamped<T>(msg: T, from: &str, cluster: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    request
        .metadata_mut()
        .insert("x-ringkv-from", from.parse().expect("ascii"));
    request
        .metadata_mut()
        .insert("x-ringkv-cluster", cluster.parse().expect("ascii"));
    request
}

/// Starts one node with `env` and expects it to refuse to start, saying
/// `expected`.
fn refuses_to_start(dir: &Path, env: &[(&str, &str)], expected: &str) -> Result<()> {
    let mut node = ServerProcess::start_on(
        dir,
        &format!("127.0.0.1:{}", free_port()),
        &format!("127.0.0.1:{}", free_port()),
        &[],
        env,
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = node.try_wait()? {
            ensure!(!status.success(), "the node started with {env:?}");
            let log = node.log();
            ensure!(log.contains(expected), "expected {expected:?} in:\n{log}");
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the node kept running with {env:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_start_on_unusable_certificates_or_an_open_door() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = Secured::make(dir.path(), &["n1".to_string()], Secure::AUTH)?;
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let ca = s.authority("ca")?;
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let expired =
        ca.issue(&Leaf::new("n1", &names, Usage::Server).valid(now - 10 * day, now - day))?;
    expired.write(dir.path(), "expired")?;
    let early =
        ca.issue(&Leaf::new("n1", &names, Usage::Server).valid(now + day, now + 10 * day))?;
    early.write(dir.path(), "early")?;
    let f = |name: &str| s.file(name).display().to_string();
    let (expired_crt, expired_key, early_crt, early_key) = (
        f("expired.crt"),
        f("expired.key"),
        f("early.crt"),
        f("early.key"),
    );
    let (peer_ca, peer_crt, peer_key, root) = (
        f("peer-ca.crt"),
        f("n1-peer.crt"),
        f("n1-peer.key"),
        f("root.token"),
    );
    let data = |i: u32| dir.path().join(format!("data{i}"));
    refuses_to_start(
        &data(1),
        &[
            ("RINGKV__TLS__CERT", &expired_crt),
            ("RINGKV__TLS__KEY", &expired_key),
        ],
        "expired",
    )?;
    refuses_to_start(
        &data(2),
        &[
            ("RINGKV__TLS__CERT", &early_crt),
            ("RINGKV__TLS__KEY", &early_key),
        ],
        "not valid before",
    )?;
    // The harness names its nodes test-<port>; this certificate names n1.
    refuses_to_start(
        &data(3),
        &[
            ("RINGKV__TLS__PEER_CA", &peer_ca),
            ("RINGKV__TLS__PEER_CERT", &peer_crt),
            ("RINGKV__TLS__PEER_KEY", &peer_key),
        ],
        "not this node's node.name",
    )?;
    refuses_to_start(
        &data(4),
        &[
            ("RINGKV__AUTH__ENABLED", "true"),
            ("RINGKV__AUTH__ROOT_TOKEN_FILE", &root),
            ("RINGKV__DEBUG__FAULT_INJECTION", "true"),
        ],
        "exclude each other",
    )?;
    refuses_to_start(
        &data(5),
        &[("RINGKV__AUTH__ENABLED", "true")],
        "root_token_file",
    )?;
    // Tokens with a peer port that takes anyone, even on loopback.
    refuses_to_start(
        &data(6),
        &[
            ("RINGKV__AUTH__ENABLED", "true"),
            ("RINGKV__AUTH__ROOT_TOKEN_FILE", &root),
        ],
        "mutual TLS",
    )?;
    Ok(())
}

/// The leaf certificate `address` presents, after a TLS handshake that
/// trusts `ca` and presents `identity`.
async fn presented(
    address: &str,
    ca: &[u8],
    identity: Option<(&[u8], &[u8])>,
    name: &str,
) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert?)?;
    }
    #[allow(deprecated)] // as the server's (server/src/tls/mod.rs)
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let stream = connector
        .connect(ServerName::try_from(name.to_string())?, tcp)
        .await?;
    let (_, session) = stream.get_ref();
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .context("no certificate presented")?;
    Ok(leaf.as_ref().to_vec())
}

fn der_of(pem: &str) -> Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    Ok(
        rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())?
            .as_ref()
            .to_vec(),
    )
}

/// Replaces a node's client-port and peer certificates under a continuous
/// load (one long-lived client, and one opening a new TLS connection for
/// every request): no request fails, new connections get the new
/// certificates, and an expired replacement is refused while the node
/// keeps the certificates it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_rotate_under_load_without_a_failed_request() -> Result<()> {
    let cluster = TestCluster::start_secured(3, &[], &[], Secure::AUTH).await?;
    let s = cluster.secured.clone().context("secured")?;
    let ca = read(&s, "ca.crt");
    let peer_ca = read(&s, "peer-ca.crt");
    let node0 = &cluster.nodes[0];
    let name0 = ringkv_tests::secure::node_name(&node0.grpc);
    let name1 = ringkv_tests::secure::node_name(&cluster.nodes[1].grpc);
    let peer1 = (
        read(&s, &format!("{name1}-peer.crt")),
        read(&s, &format!("{name1}-peer.key")),
    );
    let old_client_cert = presented(&node0.grpc, &ca, None, &name0).await?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spawn_load = |fresh_connections: bool, worker: usize| {
        let stop = stop.clone();
        let endpoints = cluster.endpoints();
        let security: Security = cluster.security();
        let steady = (!fresh_connections).then(|| cluster.client());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                let fresh;
                let client = match &steady {
                    Some(client) => client,
                    None => {
                        // Through node 0 only, so every request is a new
                        // handshake with it.
                        fresh = Client::new(&endpoints[..1])
                            .and_then(|c| c.with_security(security.clone()))
                            .expect("client")
                            .with_routing(false);
                        &fresh
                    }
                };
                let key = format!("rotate-{worker}-{i}");
                let result = async {
                    client
                        .put(key.clone().into_bytes(), b"v".to_vec(), Default::default())
                        .await?;
                    client
                        .get(key.into_bytes(), Default::default(), false)
                        .await
                }
                .await;
                match result {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e}")),
                }
                i += 1;
            }
            (ok, failed)
        })
    };
    let loads: Vec<_> = (0..2).map(|w| spawn_load(w == 0, w)).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // New certificates for node 0, same names, written over the old files
    // (each file replaced whole), then SIGHUP.
    let leaf = |usage, sans: &[String]| ringkv_server::certs::Leaf::new(&name0, sans, usage);
    let client_sans = vec![name0.clone(), "localhost".into(), "127.0.0.1".into()];
    let new_client = s
        .authority("ca")?
        .issue(&leaf(Usage::Server, &client_sans))?;
    let new_peer = s
        .authority("peer-ca")?
        .issue(&leaf(Usage::Peer, std::slice::from_ref(&name0)))?;
    new_client.write(&s.dir, &name0)?;
    new_peer.write(&s.dir, &format!("{name0}-peer"))?;
    ringkv_tests::signal(node0.pid().context("node 0 runs")?, libc::SIGHUP);
    let reloaded = async {
        while !node0.log().contains("TLS certificates reloaded") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reloaded)
        .await
        .with_context(|| {
            format!(
                "node 0 did not reload its certificates; log:\n{}",
                node0.log()
            )
        })?;
    let now_client = presented(&node0.grpc, &ca, None, &name0).await?;
    ensure!(
        now_client != old_client_cert,
        "the client port still presents the old certificate"
    );
    ensure!(
        now_client == der_of(&new_client.cert_pem)?,
        "the client port presents an unexpected certificate"
    );
    let now_peer = presented(
        &node0.peer,
        &peer_ca,
        Some((peer1.0.as_slice(), peer1.1.as_slice())),
        &name0,
    )
    .await?;
    ensure!(
        now_peer == der_of(&new_peer.cert_pem)?,
        "the peer port presents an unexpected certificate"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // An expired replacement is refused; the node keeps the new one.
    let now = OffsetDateTime::now_utc();
    let expired = s
        .authority("ca")?
        .issue(&leaf(Usage::Server, &client_sans).valid(
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        ))?;
    expired.write(&s.dir, &name0)?;
    ringkv_tests::signal(node0.pid().context("node 0 runs")?, libc::SIGHUP);
    let refused = async {
        while !node0.log().contains("TLS reload refused") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), refused)
        .await
        .context("node 0 did not refuse the expired certificate")?;
    ensure!(node0.log().contains("expired"), "the refusal says why");
    ensure!(
        presented(&node0.grpc, &ca, None, &name0).await? == der_of(&new_client.cert_pem)?,
        "the node keeps the certificate it had"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for (w, load) in loads.into_iter().enumerate() {
        let (ok, failed) = load.await?;
        println!("load {w}: {ok} put+get pairs, {} failed", failed.len());
        ensure!(
            failed.is_empty(),
            "load {w}: requests failed during rotation: {failed:?}"
        );
        ensure!(
            ok > 10,
            "load {w} made too few requests ({ok}) to mean anything"
        );
        total += ok;
    }
    println!("rotation under load: {total} put+get pairs, 0 failed");
    Ok(())
}

/// A secured three-node cluster serves a Python grpcio client over TLS
/// with a token, and refuses it a key outside its token's prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_puts_and_gets_over_tls_with_a_token() -> Result<()> {
    let python = python()?;
    let cluster = TestCluster::start_secured(3, &[], &[], Secure::AUTH).await?;
    let s = cluster.secured.clone().context("secured")?;
    let token = cluster
        .client()
        .create_token(TokenRequest {
            name: "python".into(),
            scopes: vec!["read".into(), "write".into()],
            prefix: Some(b"py/".to_vec().into()),
            ttl: None,
        })
        .await?
        .token;
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples/python/put_get_tls.py");
    let run = |key: &str| {
        std::process::Command::new(&python)
            .arg(&example)
            .args(["--endpoint", &cluster.nodes[1].grpc])
            .arg("--cacert")
            .arg(s.file("ca.crt"))
            .args(["--token", &token, key, "from-python"])
            .output()
            .expect("running the Python example")
    };
    let out = run("py/k");
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "from-python",
        "the Python client failed: {out:?}"
    );
    let got = cluster
        .client()
        .get(b"py/k".to_vec(), Default::default(), false)
        .await?;
    ensure!(got.siblings.len() == 1 && got.siblings[0].value.as_ref() == b"from-python");
    let out = run("elsewhere/k");
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"),
        "a key outside the prefix must be refused: {out:?}"
    );
    Ok(())
}

/// Tokens reach every node through the cluster: a node that was down when
/// a token was created and another revoked learns both from the token-sync
/// worker once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_down_learns_new_tokens_and_revocations_when_it_returns() -> Result<()> {
    let mut cluster = TestCluster::start_secured(3, &[], &[], Secure::AUTH).await?;
    let s = cluster.secured.clone().context("secured")?;
    let ca = read(&s, "ca.crt");
    let request = |name: &str| TokenRequest {
        name: name.into(),
        scopes: vec!["read".into(), "write".into()],
        ..TokenRequest::default()
    };
    let old = cluster.client().create_token(request("old")).await?;
    cluster.nodes[2].kill();
    let root = Client::new(&cluster.endpoints()[..1])?.with_security(cluster.security())?;
    let new = root.create_token(request("new")).await?.token;
    ensure!(
        root.revoke_token(&old.info.as_ref().context("info")?.id)
            .await?
    );
    cluster.nodes[2].restart().await?;
    let address = cluster.nodes[2].grpc.clone();
    let name = ringkv_tests::secure::node_name(&address);
    let mut kv = KvClient::new(tls_channel(&address, &ca, None, &name));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let new_works = kv.put(with_token(put("k"), Some(&new))).await.is_ok();
        let old_refused = kv
            .put(with_token(put("k"), Some(&old.token)))
            .await
            .is_err_and(|s| s.code() == Code::Unauthenticated);
        if new_works && old_refused {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "node 2 did not learn the tokens: new accepted {new_works}, old refused {old_refused}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
