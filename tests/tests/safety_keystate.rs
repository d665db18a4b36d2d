//! Bounded key state on real processes: no key can grow past what one
//! internal message carries, so no write, read, hint or transfer of it can
//! break a connection, take a healthy peer out of routing, or leave the key
//! unreadable.
//!
//! - Two concurrent 700 KB puts from the same context (twin siblings of
//!   1.4 MB, above `limits.max_key_state_bytes`): the second is refused
//!   with RESOURCE_EXHAUSTED saying how to resolve the key, or the key
//!   stays readable; no node ever sees a peer down; a put with a read's
//!   context replaces the siblings; a fourth node then joins and every
//!   transfer completes with the keys readable on their new replicas.
//! - 150 puts to one key, each with a well-formed context of 1,024 entries
//!   (the key's real ones plus fabricated node ids): the stored vector
//!   names only cluster members, the stored state stays within the limit on
//!   every replica, and the key reads back as the last acknowledged put.
//!
//! ```text
//! CARGO_TARGET_DIR=~/.cache/ringkv/target cargo build --release --locked --bins
//! CARGO_TARGET_DIR=~/.cache/ringkv/target cargo test --release --locked \
//!     -p ringkv-tests --test safety_keystate -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_client::{Context, Error, Level, PutOptions, RequestOptions};
use ringkv_tests::rebalance::{describe, wait_settled};
use ringkv_tests::{partition_of, TestCluster};

/// One test at a time: each is several processes moving megabytes on a
/// small machine. A tokio mutex does not poison.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Size of each twin value: two of them (1.4 MB) pass the default key
/// state limit and, before it existed, the internal message limit.
const TWIN_BYTES: usize = 700 * 1000;

/// The default `limits.max_key_state_bytes`.
const KEY_STATE_LIMIT: usize = 1024 * 1024 + 256 * 1024;

/// Bytes a stored version may take beyond its value (dot, timestamp,
/// flags, expiry, length), an upper bound used to estimate a stored state
/// from `Admin.LocalGet`.
const VERSION_OVERHEAD: usize = 40;

/// Keys given twin siblings before the join: with a quarter of the
/// partition replicas moving to the new node, some of them move.
const TWIN_KEYS: usize = 3;

/// Puts with fabricated contexts, and the entries of each context.
const WIDE_PUTS: usize = 150;
const CONTEXT_ENTRIES: usize = 1024;

/// Gossip interval of the twin test: a peer marked down by a failed call
/// stays down until its next heartbeat arrives, so a slower rhythm than the
/// harness's keeps such a mark visible long enough for the watch to see.
const TWIN_GOSSIP_MS: &str = "1000";

/// How often the liveness watch asks every node for its members.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// How long the watch keeps looking after the twin puts returned: hint
/// delivery and read repair run in that time too.
const WATCH_AFTER: Duration = Duration::from_secs(3);

/// Longest the join may take to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Partitions of these clusters: few, so a join moves some of the keys'.
const PARTITIONS: &str = "16";

// ------------------------------------------------------ the context format

/// The client context in format 1 (`server/src/version/codec.rs`):
/// `0x01`, a varint entry count, then per entry the node id (u64 LE) and a
/// varint counter, nodes ascending.
fn encode_context(entries: &BTreeMap<u64, u64>) -> Vec<u8> {
    let mut out = vec![1u8];
    put_varint(&mut out, entries.len() as u64);
    for (node, counter) in entries {
        out.extend_from_slice(&node.to_le_bytes());
        put_varint(&mut out, *counter);
    }
    out
}

/// The entries of a context a node returned, checked by encoding them back
/// to the same bytes (so [`encode_context`] writes what nodes write).
fn decode_context(bytes: &[u8]) -> BTreeMap<u64, u64> {
    assert_eq!(bytes.first(), Some(&1), "context format byte");
    let mut pos = 1;
    let count = read_varint(bytes, &mut pos);
    let mut entries = BTreeMap::new();
    for _ in 0..count {
        let node = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap());
        pos += 8;
        entries.insert(node, read_varint(bytes, &mut pos));
    }
    assert_eq!(pos, bytes.len(), "context has trailing bytes");
    assert_eq!(
        encode_context(&entries),
        bytes,
        "context does not round-trip"
    );
    entries
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn read_varint(bytes: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = bytes[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
    }
    value
}

/// A node id no member has: splitmix64 of `i`, far from real random ids
/// only by chance, which is all a fabricated id needs.
fn fabricated_id(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ------------------------------------------------------------------ helpers

fn put_with(context: Option<Context>, level: Level) -> PutOptions {
    PutOptions {
        consistency: RequestOptions::level(level),
        context,
        ttl: None,
    }
}

/// A 700 KB value whose first bytes name it.
fn twin_value(name: &str) -> Vec<u8> {
    let mut v = format!("{name}:").into_bytes();
    v.resize(TWIN_BYTES, name.as_bytes()[0]);
    v
}

fn short(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(&v[..v.len().min(24)]).to_string();
    format!(
        "{}.. ({} bytes)",
        s.split(':').next().unwrap_or(""),
        v.len()
    )
}

/// Whether a failed put is the documented refusal of a key at its limit.
fn is_documented_refusal(e: &Error) -> bool {
    match e {
        Error::Overloaded(msg) => msg.contains("max_key_state_bytes") && msg.contains("context"),
        _ => false,
    }
}

/// Watches every node's view of its peers' liveness until stopped;
/// returns every sighting of a member that was not alive.
struct LivenessWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl LivenessWatch {
    fn start(cluster: &TestCluster) -> LivenessWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = cluster.nodes.iter().map(|n| n.client()).collect();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for (i, client) in clients.iter().enumerate() {
                    match client.members().await {
                        Ok(members) => {
                            for m in members.iter().filter(|m| m.liveness != "alive") {
                                seen.push(format!("node {i} saw {} {}", m.node_id, m.liveness));
                            }
                        }
                        Err(e) => seen.push(format!("node {i} did not list its members: {e}")),
                    }
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
            seen
        });
        LivenessWatch { stop, task }
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Fails the test with every problem found, and the nodes' log tails.
fn assert_no_problems(cluster: &TestCluster, problems: &[String]) {
    if problems.is_empty() {
        return;
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        let log = node.log();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        eprintln!("---- node {i} log tail ----");
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
    panic!(
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// -------------------------------------------------------------------- tests

/// Two concurrent 700 KB puts with the context of one get, on three nodes
/// with N = 3; then a fourth node joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_large_siblings_are_refused_and_leave_the_cluster_healthy() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let env = [
        ("RINGKV__GOSSIP__INTERVAL_MS", TWIN_GOSSIP_MS),
        ("RINGKV__CLUSTER__PARTITIONS", PARTITIONS),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let client = cluster.client();
    let before = client.layout().await.unwrap();
    // Keys in distinct partitions, so the join is likely to move some.
    let mut keys: Vec<String> = Vec::new();
    for i in 0.. {
        let key = format!("twin-{i}");
        let p = partition_of(key.as_bytes(), before.partitions, before.hash_seed);
        if keys
            .iter()
            .all(|k| partition_of(k.as_bytes(), before.partitions, before.hash_seed) != p)
        {
            keys.push(key);
        }
        if keys.len() == TWIN_KEYS {
            break;
        }
    }

    let mut problems = Vec::new();
    // What each key must read back as afterwards.
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for key in &keys {
        let base = client
            .put(key.clone(), "base", put_with(None, Level::Quorum))
            .await;
        let read = match base {
            Ok(_) => {
                client
                    .get(key.clone(), RequestOptions::level(Level::Quorum), false)
                    .await
            }
            Err(e) => Err(e),
        };
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                problems.push(format!("{key}: the first put and get failed: {e:?}"));
                continue;
            }
        };
        let (a, b) = (twin_value("alpha"), twin_value("bravo"));
        let watch = LivenessWatch::start(&cluster);
        let (ra, rb) = tokio::join!(
            client.put(
                key.clone(),
                a.clone(),
                put_with(Some(read.context.clone()), Level::Quorum)
            ),
            client.put(
                key.clone(),
                b.clone(),
                put_with(Some(read.context.clone()), Level::Quorum)
            ),
        );
        let mut acked = Vec::new();
        for (value, result) in [(&a, &ra), (&b, &rb)] {
            match result {
                Ok(_) => acked.push(value.clone()),
                Err(e) if is_documented_refusal(e) => {
                    println!(
                        "[{:>5.1?}] {key}: refused as documented: {e}",
                        started.elapsed()
                    )
                }
                Err(e) => problems.push(format!(
                    "{key}: a twin put of {} failed other than as documented: {e:?}",
                    short(value)
                )),
            }
        }
        // Reads at every R: the key is readable; with R + W > N it holds
        // every acknowledged twin (at R = 1 a replica the write has not
        // reached yet may answer first).
        for level in [Level::One, Level::Quorum, Level::All] {
            match client
                .get(key.clone(), RequestOptions::level(level), false)
                .await
            {
                Ok(got) => {
                    let values: Vec<&[u8]> =
                        got.siblings.iter().map(|s| s.value.as_ref()).collect();
                    for value in acked.iter().filter(|_| level != Level::One) {
                        if !values.contains(&value.as_slice()) {
                            problems.push(format!(
                                "{key} at {level:?}: the acknowledged {} is missing (read {:?})",
                                short(value),
                                values.iter().map(|v| short(v)).collect::<Vec<_>>()
                            ));
                        }
                    }
                }
                Err(e) => problems.push(format!("{key} at {level:?}: unreadable: {e:?}")),
            }
        }
        tokio::time::sleep(WATCH_AFTER).await;
        let down = watch.stop().await;
        if !down.is_empty() {
            problems.push(format!(
                "{key}: a peer was seen not alive after the twin puts ({} sightings), first: {:?}",
                down.len(),
                &down[..down.len().min(5)]
            ));
        }
        // A put with the context of a read replaces the siblings, whatever
        // they are: always allowed.
        let read = client
            .get(key.clone(), RequestOptions::level(Level::Quorum), false)
            .await;
        let resolved = twin_value("charlie");
        match read {
            Ok(read) => match client
                .put(
                    key.clone(),
                    resolved.clone(),
                    put_with(Some(read.context), Level::Quorum),
                )
                .await
            {
                Ok(_) => {
                    expected.insert(key.clone(), resolved);
                }
                Err(e) => problems.push(format!(
                    "{key}: a put with the context of a read was refused: {e:?}"
                )),
            },
            Err(e) => problems.push(format!("{key}: unreadable before resolving: {e:?}")),
        }
        println!(
            "[{:>5.1?}] {key}: twin puts acked {}, resolved",
            started.elapsed(),
            acked.len()
        );
    }
    for (i, node) in cluster.nodes.iter().enumerate() {
        match node.client().members().await {
            Ok(members) => {
                for m in members.iter().filter(|m| m.liveness != "alive") {
                    problems.push(format!("node {i} sees {} {}", m.node_id, m.liveness));
                }
            }
            Err(e) => problems.push(format!("node {i} did not list its members: {e}")),
        }
    }
    assert_no_problems(&cluster, &problems);

    // A fourth node joins by itself; every transfer must complete.
    let joined = cluster.add_node(&[]).await.unwrap();
    let settled = wait_settled(&cluster, before.version, 4, None, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|e| {
            assert_no_problems(&cluster, &[format!("the join did not settle: {e:#}")]);
            unreachable!()
        });
    println!(
        "[{:>5.1?}] node {joined} joined; settled: {}",
        started.elapsed(),
        describe(&settled.layout)
    );
    let replicas_of = |layout: &ringkv_proto::v1::LayoutResponse, key: &str| -> Vec<String> {
        let p = partition_of(key.as_bytes(), layout.partitions, layout.hash_seed);
        layout
            .assignments
            .iter()
            .find(|a| a.partition == p)
            .map(|a| a.replicas.clone())
            .unwrap_or_default()
    };
    let mut moved = 0;
    for (key, value) in &expected {
        let old = replicas_of(&before, key);
        let new = replicas_of(&settled.layout, key);
        if old != new {
            moved += 1;
        }
        println!("{key}: replicas {old:?} -> {new:?}");
        for id in &new {
            let Some(i) = cluster.index_of(id) else {
                problems.push(format!("{key}: replica {id} is not a running node"));
                continue;
            };
            match cluster.nodes[i].client().local_get(0, key.clone()).await {
                Ok(copy)
                    if copy
                        .versions
                        .iter()
                        .any(|v| v.value.as_ref() == value.as_slice()) => {}
                Ok(copy) => problems.push(format!(
                    "{key}: replica node {i} holds {:?}, not {}",
                    copy.versions
                        .iter()
                        .map(|v| short(&v.value))
                        .collect::<Vec<_>>(),
                    short(value)
                )),
                Err(e) => problems.push(format!("{key}: LocalGet on node {i}: {e}")),
            }
        }
        match client
            .get(key.clone(), RequestOptions::level(Level::All), false)
            .await
        {
            Ok(got)
                if got.siblings.len() == 1
                    && got.siblings[0].value.as_ref() == value.as_slice() => {}
            Ok(got) => problems.push(format!(
                "{key}: read {:?} after the join",
                got.siblings
                    .iter()
                    .map(|s| short(&s.value))
                    .collect::<Vec<_>>()
            )),
            Err(e) => problems.push(format!("{key}: unreadable after the join: {e:?}")),
        }
    }
    println!(
        "[{:>5.1?}] {moved} of {} keys' partitions moved; done",
        started.elapsed(),
        expected.len()
    );
    assert_no_problems(&cluster, &problems);
}

/// 150 puts to one key, each with a distinct context of 1,024 entries: the
/// key's real entries and fabricated node ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_of_fabricated_nodes_do_not_grow_the_stored_state() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let cluster =
        TestCluster::start_with_env(3, &[], &[("RINGKV__CLUSTER__PARTITIONS", PARTITIONS)])
            .await
            .unwrap();
    let client = cluster.client();
    let key = "wide";
    client
        .put(key, "v-base", put_with(None, Level::Quorum))
        .await
        .unwrap();
    let members: Vec<u64> = cluster
        .ids
        .iter()
        .map(|id| u64::from_str_radix(id, 16).unwrap())
        .collect();
    let mut problems = Vec::new();
    let mut last_acked = b"v-base".to_vec();
    let (mut acked, mut refused) = (0, 0);
    for i in 0..WIDE_PUTS {
        let read = match client
            .get(key, RequestOptions::level(Level::Quorum), false)
            .await
        {
            Ok(read) => read,
            Err(e) => {
                problems.push(format!("put {i}: the key is unreadable: {e:?}"));
                break;
            }
        };
        // The key's real entries (its writers, all members), then fresh
        // fabricated ids up to the full size: each put names 1,024 nodes,
        // most of which no earlier put named.
        let mut entries: BTreeMap<u64, u64> = decode_context(&read.context.0)
            .into_iter()
            .filter(|(id, _)| members.contains(id))
            .collect();
        let mut n = 0u64;
        while entries.len() < CONTEXT_ENTRIES {
            let id = fabricated_id((i * CONTEXT_ENTRIES) as u64 + n);
            n += 1;
            entries.entry(id).or_insert(1 + (n % 1000));
        }
        let context = Context(encode_context(&entries).into());
        let value = format!("v-{i}").into_bytes();
        match client
            .put(key, value.clone(), put_with(Some(context), Level::Quorum))
            .await
        {
            Ok(_) => {
                acked += 1;
                last_acked = value;
            }
            Err(e) if is_documented_refusal(&e) => refused += 1,
            Err(Error::InvalidArgument(msg)) if msg.contains("context") => refused += 1,
            Err(e) => problems.push(format!("put {i}: failed other than as documented: {e:?}")),
        }
    }
    println!(
        "[{:>5.1?}] {acked} puts acknowledged, {refused} refused as documented",
        started.elapsed()
    );

    // Every replica (N = 3 of 3 nodes): the stored vector names cluster
    // members only, and the state is within the limit.
    for (i, node) in cluster.nodes.iter().enumerate() {
        match node.client().local_get(0, key).await {
            Ok(copy) => {
                let vector = decode_context(&copy.context.0);
                let values: usize = copy
                    .versions
                    .iter()
                    .map(|v| v.value.len() + VERSION_OVERHEAD)
                    .sum();
                let estimate = copy.context.0.len() + values;
                println!(
                    "node {i}: {} vector entries, {} versions, about {estimate} bytes",
                    vector.len(),
                    copy.versions.len()
                );
                let foreign: Vec<u64> = vector
                    .keys()
                    .copied()
                    .filter(|id| !members.contains(id))
                    .collect();
                if !foreign.is_empty() {
                    problems.push(format!(
                        "node {i}: the stored vector has {} entries of nodes that are not members (of {} in all)",
                        foreign.len(),
                        vector.len()
                    ));
                }
                if estimate > KEY_STATE_LIMIT {
                    problems.push(format!(
                        "node {i}: the stored state is about {estimate} bytes, above {KEY_STATE_LIMIT}"
                    ));
                }
                if !copy
                    .versions
                    .iter()
                    .any(|v| v.value.as_ref() == last_acked.as_slice())
                {
                    problems.push(format!(
                        "node {i}: does not hold the last acknowledged put {:?}",
                        String::from_utf8_lossy(&last_acked)
                    ));
                }
            }
            Err(e) => problems.push(format!("node {i}: LocalGet failed: {e}")),
        }
    }
    match client
        .get(key, RequestOptions::level(Level::All), false)
        .await
    {
        Ok(got) => {
            let values: Vec<String> = got
                .siblings
                .iter()
                .map(|s| String::from_utf8_lossy(&s.value).to_string())
                .collect();
            if values != vec![String::from_utf8_lossy(&last_acked).to_string()] {
                problems.push(format!(
                    "the key reads {values:?}, expected only the last acknowledged put"
                ));
            }
            let context = decode_context(&got.context.0);
            if context.len() > cluster.nodes.len() {
                problems.push(format!(
                    "a get returns a context of {} entries for a key written through {} nodes",
                    context.len(),
                    cluster.nodes.len()
                ));
            }
        }
        Err(e) => problems.push(format!("the key is unreadable at ALL: {e:?}")),
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}
