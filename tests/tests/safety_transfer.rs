//! Data is deleted only when it is safe: cluster changes on real processes
//! with a replica that is paused or wiped while the change runs.
//!
//! - A node joins while one old replica is SIGSTOPped and writes continue
//!   at W = 2: the transfers wait for the paused replica instead of
//!   skipping it (the change does not finish while it is paused), and once
//!   it is back and the change settled, every acknowledged write reads
//!   back at R = ALL and is stored on every final replica and nowhere else.
//! - A node whose data directory was wiped comes back at its address under
//!   a new id: it takes the old id's place through a transfer, and until
//!   that is done it never makes a read quorum alone, so a strict R = 2 read
//!   never answers "not found" for an acknowledged key, during the
//!   replacement or after it.
//!
//! ```text
//! cargo build --release --locked --bins
//! cargo test --release --locked -p ringkv-tests --test safety_transfer -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::stream::{self, StreamExt as _};
use ringkv_client::{Client, Error, Level, RequestOptions};
use ringkv_tests::rebalance::check::{
    assert_no_problems, read_problems, summarize, wait_placement, RETIRE_TIMEOUT,
};
use ringkv_tests::rebalance::load::preload;
use ringkv_tests::rebalance::{describe, wait_settled, wait_transition, PARTITIONS};
use ringkv_tests::{put_opts, signal, value_of, wait_stopped, TestCluster};

/// One test at a time: each runs several processes and depends on timing
/// (a throttled transfer, a pause in the middle of it).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Longest a change may take to settle once every node runs.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Server-side timeout of the test's requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause between two writes of one writer.
const WRITE_PAUSE: Duration = Duration::from_millis(20);

/// Most writes one writer makes, whatever happens.
const MAX_WRITES: usize = 5_000;

/// Keys read at once by the checkers.
const READ_CONCURRENCY: usize = 16;

/// SIGSTOP or SIGCONT node `i`, and wait until it took.
async fn pause(cluster: &TestCluster, i: usize, stop: bool) -> Result<()> {
    let pid = cluster.nodes[i].pid().context("node is not running")?;
    signal(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT });
    wait_stopped(pid, stop).await
}

/// Writers that put fresh keys (`{prefix}-{writer}-{seq}`, value
/// [`value_of`] the key) at W = 2 through fixed nodes, and record what
/// was acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(cluster: &TestCluster, prefix: &str, via: &[usize]) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let tasks = via
            .iter()
            .map(|&i| {
                let client = cluster.client_via(i);
                let (stop, acked) = (stop.clone(), acked.clone());
                let prefix = format!("{prefix}-w{i}");
                tokio::spawn(async move {
                    for seq in 0..MAX_WRITES {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let key = format!("{prefix}-{seq}");
                        let mut opts = put_opts(Level::Count(2), false);
                        opts.consistency.timeout = Some(REQUEST_TIMEOUT);
                        if client.put(key.clone(), value_of(&key), opts).await.is_ok() {
                            acked.lock().unwrap().push(key);
                        }
                        tokio::time::sleep(WRITE_PAUSE).await;
                    }
                })
            })
            .collect();
        Writers { stop, acked, tasks }
    }

    fn acknowledged(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// A node joins 3 nodes (N = 3) while one old replica is SIGSTOPped in the
/// middle of the transfers, and writes go on at W = 2 through the other
/// two. Every partition's old set includes the paused node, which may hold
/// acknowledged writes the others lack, so no transfer may end, and the
/// change may not retire, until it is back: on the code before this check
/// the new node synced only the old replicas it believed alive, finished
/// while the node was paused, and the old replicas deleted their copies
/// on the strength of the layout alone. Afterwards no acknowledged write
/// is lost: each reads back at R = ALL and sits on every final replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_old_replica_is_waited_for_and_no_acknowledged_write_is_lost() {
    /// Long enough that the pause lands while the transfers stream.
    const RATE_MB: &str = "0.1";
    const PRELOAD_KEYS: usize = 800;
    const PRELOAD_VALUE_BYTES: usize = 1_000;
    /// How long the paused node stays paused after the new node has
    /// streamed everything it can: on the old code the change settled
    /// well within this.
    const HOLD_AFTER_STREAMED: Duration = Duration::from_secs(6);
    /// Longest the pause lasts in any case.
    const MAX_PAUSE: Duration = Duration::from_secs(120);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let env = [
        ("RINGKV__CLUSTER__PARTITIONS", PARTITIONS),
        ("RINGKV__TRANSFER__MAX_RATE", RATE_MB),
        // Only transfers and hints may move data here, not a repair pass.
        ("RINGKV__REPAIR__ANTI_ENTROPY", "false"),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    let preloaded = preload(
        &cluster.client(),
        "pause-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();
    // The paused node: the highest id, so the claimant keeps running.
    let paused = (0..3).max_by_key(|i| cluster.ids[*i].clone()).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != paused).collect();
    let paused_id = cluster.ids[paused].clone();
    let writers = Writers::start(&cluster, "pause", &others);

    let new = cluster.add_node(&[]).await.unwrap();
    let receiver = cluster.nodes[new].client();
    let transition = wait_transition(&cluster, before.version, Duration::from_secs(30))
        .await
        .expect("the join was committed and is being transferred");
    println!(
        "[{:>5.1?}] in transition: {}",
        started.elapsed(),
        describe(&transition)
    );
    // Pause once bytes are flowing, so the pause lands mid-transfer.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.transfers(0).await.unwrap().bytes_received == 0 {
        assert!(Instant::now() < deadline, "no transfer started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pause(&cluster, paused, true).await.unwrap();
    let paused_at = Instant::now();
    println!(
        "[{:>5.1?}] SIGSTOP node {paused} ({paused_id}); {} writes acknowledged so far",
        started.elapsed(),
        writers.acknowledged()
    );

    let mut problems = Vec::new();
    let mut streamed_at: Option<Instant> = None;
    let mut last_states = BTreeMap::new();
    loop {
        for i in (0..cluster.nodes.len()).filter(|i| *i != paused) {
            if let Ok(l) = cluster.nodes[i].client().layout().await {
                if l.version > transition.version && l.previous_version == 0 {
                    problems.push(format!(
                        "node {i} holds settled layout v{} while old replica {paused_id} is paused: the change finished without syncing it",
                        l.version
                    ));
                }
            }
        }
        if !problems.is_empty() {
            break;
        }
        let transfers = receiver.transfers(0).await.unwrap();
        last_states = transfers
            .transfers
            .iter()
            .filter(|t| t.layout_version == transition.version)
            .map(|t| (t.partition, (t.state.clone(), t.last_error.clone())))
            .collect();
        let streaming = last_states
            .values()
            .any(|(s, _)| s == "queued" || s == "streaming");
        if !streaming && !last_states.is_empty() {
            streamed_at.get_or_insert_with(Instant::now);
        }
        if streamed_at.is_some_and(|t| t.elapsed() >= HOLD_AFTER_STREAMED)
            || paused_at.elapsed() > MAX_PAUSE
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "[{:>5.1?}] while paused: {} partitions in, states {:?}",
        started.elapsed(),
        last_states.len(),
        last_states
            .values()
            .fold(BTreeMap::<&str, usize>::new(), |mut m, (s, _)| {
                *m.entry(s.as_str()).or_default() += 1;
                m
            })
    );
    if problems.is_empty() {
        // The receiver says what it waits for.
        let waiting = last_states
            .values()
            .filter(|(s, e)| s == "syncing" && e.contains(&paused_id))
            .count();
        if streamed_at.is_none() || waiting == 0 {
            problems.push(format!(
                "the receiver never showed a transfer waiting for the paused node: {last_states:?}"
            ));
        }
    }
    pause(&cluster, paused, false).await.unwrap();
    println!(
        "[{:>5.1?}] SIGCONT node {paused} after {:.1?}",
        started.elapsed(),
        paused_at.elapsed()
    );

    let settled = wait_settled(&cluster, before.version, 4, None, SETTLE_TIMEOUT).await;
    let acked = writers.stop().await;
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            problems.push(format!("{e:#}"));
            assert_no_problems(&cluster, &problems);
            unreachable!()
        }
    };
    println!(
        "[{:>5.1?}] settled: {}; {} writes acknowledged",
        started.elapsed(),
        describe(&settled.layout),
        acked.len()
    );
    if let Err(e) = cluster.wait_no_hints().await {
        problems.push(format!("hints: {e:#}"));
    }
    let mut keys: Vec<(String, Vec<String>)> = preloaded
        .iter()
        .map(|(k, v)| (k.clone(), vec![v.clone()]))
        .collect();
    keys.extend(acked.iter().map(|k| (k.clone(), vec![value_of(k)])));
    let lost = read_problems(&cluster.client(), &keys, Level::All).await;
    problems.extend(summarize("R=ALL reads of acknowledged writes", &lost));
    match wait_placement(&cluster, &settled.layout, &keys, RETIRE_TIMEOUT).await {
        Ok((misplaced, _)) => problems.extend(summarize("placement", &misplaced)),
        Err(e) => problems.push(format!("placement check failed: {e:#}")),
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// What strict R = 2 reads of the acknowledged keys saw in one round.
#[derive(Debug, Default)]
struct ReadRound {
    found: usize,
    /// Acknowledged keys read as absent: a lost write, as far as the
    /// client can tell.
    not_found: Vec<String>,
    /// Retryable failures (too few replicas reachable).
    failed: BTreeMap<String, usize>,
}

async fn read_round(client: &Client, keys: &[String]) -> ReadRound {
    let results: Vec<(String, std::result::Result<bool, Error>)> = stream::iter(keys)
        .map(|key| async move {
            let opts = RequestOptions {
                level: Some(Level::Count(2)),
                sloppy: Some(false),
                timeout: Some(REQUEST_TIMEOUT),
            };
            let got = client.get(key.clone(), opts, false).await.map(|g| {
                g.siblings
                    .iter()
                    .any(|s| s.value.as_ref() == value_of(key).as_bytes())
            });
            (key.clone(), got)
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut round = ReadRound::default();
    for (key, result) in results {
        match result {
            Ok(true) => round.found += 1,
            Ok(false) => round.not_found.push(key),
            Err(e) => {
                let kind = format!("{e:?}");
                let kind = kind.split('(').next().unwrap_or("error").to_string();
                *round.failed.entry(kind).or_default() += 1;
            }
        }
    }
    round
}

/// 3 nodes, N = 3: writes at strict W = 2 while node B is paused land on
/// A and C only (C, which coordinates them, keeps B's hints). C is then
/// wiped and restarted at its address (a new id), and B resumes, cut off
/// from A. A strict R = 2 read through B can then reach only B and the
/// new node, neither of which holds the writes. On the code before this
/// change the new node replaced C in the layout at once and counted
/// toward R, so those reads answered "not found" for acknowledged keys;
/// now the replacement is a transition whose reads stay on the old set,
/// so they fail (retryably) until the new node has received and synced
/// every partition, and then find every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_counts_toward_no_read_until_it_has_received_its_partitions() {
    const KEYS: usize = 300;
    /// Reads go on this long after the replacement settled.
    const READ_AFTER: Duration = Duration::from_secs(3);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let env = [
        ("RINGKV__CLUSTER__PARTITIONS", PARTITIONS),
        ("RINGKV__TRANSFER__MAX_RATE", "0.5"),
        // Only the replacement's transfer may refill the new node.
        ("RINGKV__REPAIR__ANTI_ENTROPY", "false"),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    let (a, b, c) = (0, 1, 2);
    cluster.cut(a, b).await.unwrap();
    pause(&cluster, b, true).await.unwrap();
    let writer = cluster.client_via(c);
    let mut acked = Vec::new();
    for i in 0..KEYS {
        let key = format!("wiped-{i}");
        let mut opts = put_opts(Level::Count(2), true);
        opts.consistency.timeout = Some(REQUEST_TIMEOUT);
        match writer.put(key.clone(), value_of(&key), opts).await {
            Ok(_) => acked.push(key),
            Err(e) => println!("write {key} failed: {e}"),
        }
    }
    assert!(
        acked.len() * 10 >= KEYS * 9,
        "only {} of {KEYS} strict W=2 writes were acknowledged",
        acked.len()
    );
    let old_id = cluster.ids[c].clone();
    {
        let server = &mut cluster.nodes[c];
        server.kill();
        std::fs::remove_dir_all(&server.data_dir).unwrap();
        std::fs::create_dir_all(&server.data_dir).unwrap();
        server.restart().await.unwrap();
    }
    cluster.ids[c] = cluster.nodes[c]
        .client()
        .node_status(0)
        .await
        .unwrap()
        .node_id;
    pause(&cluster, b, false).await.unwrap();
    println!(
        "[{:>5.1?}] {} writes acknowledged on A and C only; C wiped ({old_id} -> {}), B resumed and cut from A",
        started.elapsed(),
        acked.len(),
        cluster.ids[c]
    );

    let via_b = cluster.client_via(b);
    let mut problems = Vec::new();
    let mut rounds = 0;
    let mut failed_reads: BTreeMap<String, usize> = BTreeMap::new();
    let mut settled_at: Option<Instant> = None;
    let mut saw_transition = false;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let round = read_round(&via_b, &acked).await;
        rounds += 1;
        for (kind, n) in &round.failed {
            *failed_reads.entry(kind.clone()).or_default() += n;
        }
        if !round.not_found.is_empty() {
            problems.push(format!(
                "round {rounds} ({:.1?} after the wipe): {} acknowledged keys read as not found through node B at strict R=2, e.g. {:?}",
                started.elapsed(),
                round.not_found.len(),
                &round.not_found[..round.not_found.len().min(5)]
            ));
            break;
        }
        let layout = via_b.layout().await.ok();
        if let Some(l) = &layout {
            saw_transition |= l.previous_version != 0;
            if l.version > before.version && l.previous_version == 0 && settled_at.is_none() {
                println!(
                    "[{:>5.1?}] B holds settled {} (round {rounds}: {} found, failures {:?})",
                    started.elapsed(),
                    describe(l),
                    round.found,
                    round.failed
                );
                settled_at = Some(Instant::now());
            }
        }
        if settled_at.is_some_and(|t| t.elapsed() >= READ_AFTER) && round.found == acked.len() {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "reads through B did not all find their keys within {SETTLE_TIMEOUT:?} (last round: {} found, failures {:?}; layout {:?})",
                round.found,
                round.failed,
                layout.as_ref().map(describe)
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "[{:>5.1?}] {rounds} read rounds through B; failed reads by kind: {failed_reads:?}; transition seen: {saw_transition}",
        started.elapsed()
    );
    cluster.heal().await.unwrap();
    if problems.is_empty() {
        match wait_settled(&cluster, before.version, 3, None, SETTLE_TIMEOUT).await {
            Ok(s) => {
                if !s
                    .layout
                    .assignments
                    .iter()
                    .all(|a| !a.replicas.contains(&old_id))
                {
                    problems.push(format!(
                        "the old id {old_id} is still in {}",
                        describe(&s.layout)
                    ));
                }
            }
            Err(e) => problems.push(format!("{e:#}")),
        }
        let keys: Vec<(String, Vec<String>)> = acked
            .iter()
            .map(|k| (k.clone(), vec![value_of(k)]))
            .collect();
        let lost = read_problems(&cluster.client(), &keys, Level::All).await;
        problems.extend(summarize("R=ALL reads after the replacement", &lost));
        let again = read_round(&via_b, &acked).await;
        if again.found != acked.len() {
            problems.push(format!(
                "strict R=2 reads through B after healing: {} of {} found ({:?})",
                again.found,
                acked.len(),
                again
            ));
        }
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}
