//! Twin 700 KB siblings: refused or readable, no peer ever seen down, and a join afterwards.

use super::*;

/// Size of each twin value: two of them (1.4 MB) pass the default key
/// state limit and, before it existed, the internal message limit.
const TWIN_BYTES: usize = 700 * 1000;

/// Keys given twin siblings before the join: with a quarter of the
/// partition replicas moving to the new node, some of them move.
const TWIN_KEYS: usize = 3;

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
