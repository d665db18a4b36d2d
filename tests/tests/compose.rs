//! The compose cluster (deploy/compose) from the image deploy/docker/build.sh
//! makes, under a continuous QUORUM client: real partitions, kills and
//! pauses at once, and a rolling restart of every node.
//!
//! Needs the Docker engine, `docker-compose` and the image (scripts/test.sh
//! builds it). The two tests take turns: five containers and a client
//! already fill two cores.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use ringkv_client::{Client, Context, Level, PutOptions, RequestOptions};
use ringkv_tests::compose::Compose;
use ringkv_tests::put_opts;

/// Prints a line to the test's stderr uncaptured, so the counts appear in
/// the log of a passing run too (libtest captures only the print macros).
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// One test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keys overwritten again and again, each put superseding the last one
/// acknowledged (its context): the newest acknowledged value must survive.
const HOT_KEYS: u64 = 16;

/// How long hints may take to drain, and replicas to agree, after a heal
/// (anti-entropy passes run a minute apart).
const SETTLE: Duration = Duration::from_secs(180);

/// What the client saw.
#[derive(Default)]
struct Load {
    /// Unique keys acknowledged, with their values.
    acked: Vec<(Bytes, Bytes)>,
    /// Per hot key: the newest acknowledged sequence number and its context.
    hot: BTreeMap<u64, (u64, Context)>,
    puts_ok: u64,
    gets_ok: u64,
    /// Reads that did not see a write acknowledged before they started.
    stale_reads: u64,
    /// Requests that failed, by error kind.
    failed: BTreeMap<String, u64>,
    first_failures: Vec<String>,
}

impl Load {
    fn failed(&mut self, what: &str, e: ringkv_client::Error) {
        let kind = format!("{what} {}", kind(&e));
        *self.failed.entry(kind).or_default() += 1;
        if self.first_failures.len() < 5 {
            self.first_failures.push(format!("{what}: {e}"));
        }
    }

    fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    fn summary(&self) -> String {
        format!(
            "puts acknowledged {}, gets answered {}, stale reads {}, failed {} {:?}",
            self.puts_ok,
            self.gets_ok,
            self.stale_reads,
            self.failures(),
            self.failed
        )
    }
}

fn kind(e: &ringkv_client::Error) -> &'static str {
    use ringkv_client::Error::*;
    match e {
        InvalidArgument(_) => "invalid",
        Unavailable(_) => "unavailable",
        Timeout(_) => "timeout",
        Overloaded(_) => "overloaded",
        FailedPrecondition(_) => "precondition",
        Unreachable(_) => "unreachable",
        Indeterminate(_) => "indeterminate",
        Internal(_) => "internal",
        Denied(_) => "denied",
    }
}

/// Runs a QUORUM client until `stop` (or `limit` or `max_ops`): three
/// puts of new keys, one overwrite of a hot key, one read of an
/// acknowledged key, in turn, one request at a time.
async fn client_load(client: Client, stop: Arc<AtomicBool>, limit: Duration, max_ops: u64) -> Load {
    let mut load = Load::default();
    let started = Instant::now();
    let quorum = RequestOptions::level(Level::Quorum);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit && i < max_ops {
        match i % 5 {
            3 => {
                let h = (i / 5) % HOT_KEYS;
                let mut opts = put_opts(Level::Quorum, false);
                opts.context = load.hot.get(&h).map(|(_, c)| c.clone());
                let key = format!("hot-{h}");
                match client.put(key, i.to_string(), opts).await {
                    Ok(r) => {
                        load.puts_ok += 1;
                        load.hot.insert(h, (i, r.context));
                    }
                    Err(e) => load.failed("put", e),
                }
            }
            4 if !load.acked.is_empty() => {
                let (key, value) = load.acked[(i as usize * 7919) % load.acked.len()].clone();
                match client.get(key, quorum, false).await {
                    Ok(r) => {
                        load.gets_ok += 1;
                        if !r.siblings.iter().any(|s| s.value == value) {
                            load.stale_reads += 1;
                        }
                    }
                    Err(e) => load.failed("get", e),
                }
            }
            _ => {
                let key = Bytes::from(format!("key-{i}"));
                let value = Bytes::from(format!("value-{i}"));
                match client
                    .put(key.clone(), value.clone(), PutOptions::default())
                    .await
                {
                    Ok(_) => {
                        load.puts_ok += 1;
                        load.acked.push((key, value));
                    }
                    Err(e) => load.failed("put", e),
                }
            }
        }
        i += 1;
    }
    load
}

/// Stops the client load and prints what it saw.
async fn stop_load(stop: Arc<AtomicBool>, load: tokio::task::JoinHandle<Load>) -> Result<Load> {
    stop.store(true, Ordering::Relaxed);
    let load = load.await?;
    report!("client: {}", load.summary());
    for f in &load.first_failures {
        report!("  e.g. {f}");
    }
    Ok(load)
}

/// Starts the client load in its own task.
fn start_load(
    client: Client,
    limit: Duration,
    max_ops: u64,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Load>) {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(client_load(client, stop.clone(), limit, max_ops));
    (stop, task)
}

/// Every acknowledged write read back at R = ALL: unique keys hold their
/// value, hot keys their newest acknowledged value or a later one.
/// Returns (keys checked, lost writes described).
async fn check_acknowledged(client: &Client, load: &Load) -> Result<(usize, Vec<String>)> {
    let all = RequestOptions::level(Level::All);
    let mut lost = Vec::new();
    for (key, value) in &load.acked {
        let read = client.get(key.clone(), all, false).await?;
        if !read.siblings.iter().any(|s| s.value == *value) {
            lost.push(format!("{}", String::from_utf8_lossy(key)));
        }
    }
    for (h, (seq, _)) in &load.hot {
        let read = client.get(format!("hot-{h}"), all, false).await?;
        let newest = read
            .siblings
            .iter()
            .filter_map(|s| std::str::from_utf8(&s.value).ok()?.parse::<u64>().ok())
            .max();
        if newest.is_none_or(|n| n < *seq) {
            lost.push(format!("hot-{h}: acknowledged {seq}, read {newest:?}"));
        }
    }
    Ok((load.acked.len() + load.hot.len(), lost))
}

/// Once the faults are over: hints drained, replicas agreeing, and every
/// acknowledged write read back at R = ALL; prints the counts.
async fn settle_and_check(cluster: &Compose, load: &Load) -> Result<()> {
    let (drained, agreed) = settle(cluster).await?;
    let (checked, lost) = check_acknowledged(&cluster.client()?, load).await?;
    report!(
        "acknowledged writes checked at R=ALL: {checked}, lost {}; hints drained {drained:?} and replicas agreed {agreed:?} later",
        lost.len()
    );
    if !lost.is_empty() {
        bail!(
            "acknowledged writes lost: {:?}",
            &lost[..lost.len().min(20)]
        );
    }
    Ok(())
}

/// Waits until no node holds hints, then until every partition's
/// replicas report equal Merkle roots; returns how long each took.
async fn settle(cluster: &Compose) -> Result<(Duration, Duration)> {
    let started = Instant::now();
    loop {
        let pending = cluster.hints_pending().await?;
        if pending == 0 {
            break;
        }
        if started.elapsed() > SETTLE {
            bail!(
                "{pending} hints still pending {SETTLE:?} after the heal:{}",
                cluster.hints_report().await
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained = started.elapsed();
    let started = Instant::now();
    loop {
        let differing = cluster.partitions_differing().await?;
        if differing == 0 {
            return Ok((drained, started.elapsed()));
        }
        if started.elapsed() > SETTLE {
            bail!("{differing} partitions still differ between replicas {SETTLE:?} after the hints drained");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_containers_survive_a_partition_a_kill_and_a_pause_at_once() -> Result<()> {
    let _turn = TURN.lock().await;
    let cluster = Compose::up(5).await?;
    let (stop, load) = start_load(cluster.client()?, Duration::from_secs(150), 200_000);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // ringkv-2 leaves the network, ringkv-3 is killed, ringkv-4 frozen.
    cluster.disconnect(1)?;
    cluster.kill(2)?;
    cluster.pause(3)?;
    report!("faults: ringkv-2 disconnected, ringkv-3 killed, ringkv-4 paused");
    tokio::time::sleep(Duration::from_secs(10)).await;
    cluster.reconnect(1)?;
    cluster.start(2)?;
    cluster.unpause(3)?;
    let healed = Instant::now();
    report!("healed");
    cluster.wait_formed(Duration::from_secs(90)).await?;
    report!(
        "every node alive in every view {:?} after the heal",
        healed.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let load = stop_load(stop, load).await?;
    if load.puts_ok < 100 {
        bail!("too few writes acknowledged to judge: {}", load.summary());
    }

    settle_and_check(&cluster, &load).await?;
    // Reads repaired nothing that mattered: the replicas still agree, and
    // every node still sees every other alive (a node whose connections
    // died in the partition would see its peers dead by now).
    let differing = cluster.partitions_differing().await?;
    if differing != 0 {
        bail!("{differing} partitions differ after the R=ALL reads");
    }
    cluster.wait_formed(Duration::from_secs(30)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_fails_no_quorum_request() -> Result<()> {
    let _turn = TURN.lock().await;
    let cluster = Compose::up(3).await?;
    let (stop, load) = start_load(cluster.client()?, Duration::from_secs(300), 500_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..cluster.ids.len() {
        let started = Instant::now();
        cluster.restart(i, Duration::from_secs(30))?;
        let restarted = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(90);
        while cluster.health(i)? != "healthy" {
            if Instant::now() > deadline {
                bail!(
                    "ringkv-{} not healthy 90 s after its restart:\n{}",
                    i + 1,
                    cluster.logs(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        cluster.wait_formed(Duration::from_secs(90)).await?;
        report!(
            "ringkv-{} restarted in {restarted:?}, healthy and seen alive by all {:?} after",
            i + 1,
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let load = stop_load(stop, load).await?;
    if load.puts_ok < 100 || load.gets_ok < 10 {
        bail!("too few requests to judge: {}", load.summary());
    }
    if load.failures() != 0 {
        bail!(
            "{} requests failed during the rolling restart: {:?}",
            load.failures(),
            load.first_failures
        );
    }
    settle_and_check(&cluster, &load).await?;
    Ok(())
}
