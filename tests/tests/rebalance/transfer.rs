//! Transfers: resuming after the receiver is killed, and the rate limit.

use super::*;

/// One snapshot of a node's transfers for one layout version.
#[derive(Debug, Default)]
struct Snapshot {
    /// partition → (state, bytes, resumed_from_bytes)
    transfers: BTreeMap<u32, (String, u64, u64)>,
    bytes_received: u64,
}

impl Snapshot {
    fn of(resp: &pb::TransfersResponse, version: u64) -> Snapshot {
        Snapshot {
            transfers: resp
                .transfers
                .iter()
                .filter(|t| t.layout_version == version)
                .map(|t| {
                    (
                        t.partition,
                        (t.state.clone(), t.bytes, t.resumed_from_bytes),
                    )
                })
                .collect(),
            bytes_received: resp.bytes_received,
        }
    }

    fn total(&self) -> u64 {
        self.transfers.values().map(|(_, b, _)| *b).sum()
    }

    fn all_done(&self) -> bool {
        !self.transfers.is_empty() && self.transfers.values().all(|(s, _, _)| s == "done")
    }
}

/// Kill the receiving node in the middle of a transfer and restart it on
/// the same data directory: the partitions it was streaming resume from
/// the bytes they had (not from zero), the restarted process receives
/// fewer bytes than the change transferred in all, and the change
/// completes with every key on its final replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_resumes_where_it_stopped_after_the_receiver_is_killed() {
    /// Bytes the receiver must have in before it is killed: about a
    /// fifth of what it receives in all.
    const KILL_AFTER_BYTES: u64 = 400_000;
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    // Few, large partitions and small chunks: each partition takes
    // seconds at this rate and streams in many chunks, so a kill lands
    // in the middle of one.
    let env = [
        ("RINGKV__CLUSTER__PARTITIONS", "16"),
        ("RINGKV__TRANSFER__MAX_RATE", "0.25"),
        ("RINGKV__TRANSFER__CHUNK_BYTES", "16384"),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    let preloaded = preload(&cluster.client(), "resume", 2_500, 1_000, 16)
        .await
        .unwrap();
    let new = cluster.add_node(&[]).await.unwrap();
    let receiver = cluster.nodes[new].client();

    // Wait until a good part of the data is in (so that starting over
    // would show plainly in the byte counts) and some partition is
    // part-way through streaming.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (version, at_kill) = loop {
        let resp = receiver.transfers(0).await.unwrap();
        if resp.in_transition && resp.layout_version > before.version {
            let snap = Snapshot::of(&resp, resp.layout_version);
            let streaming = snap
                .transfers
                .values()
                .any(|(state, bytes, _)| state == "streaming" && *bytes > 0);
            if streaming && snap.total() >= KILL_AFTER_BYTES {
                break (resp.layout_version, snap);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no transfer to node {new} was seen streaming: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster.nodes[new].kill();
    let midway: BTreeMap<u32, u64> = at_kill
        .transfers
        .iter()
        .filter(|(_, (state, bytes, _))| state != "done" && *bytes > 0)
        .map(|(p, (_, bytes, _))| (*p, *bytes))
        .collect();
    println!(
        "[{:>5.1?}] killed the receiver during layout v{version}: {} bytes in, partitions part-way {midway:?}, {} of {} done",
        started.elapsed(),
        at_kill.total(),
        at_kill.transfers.values().filter(|(s, _, _)| s == "done").count(),
        at_kill.transfers.len()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.nodes[new].restart().await.unwrap();
    println!("[{:>5.1?}] restarted the receiver", started.elapsed());

    // Follow the restarted receiver until its transfers of this version
    // are all done.
    let receiver = cluster.nodes[new].client();
    let mut resumed: BTreeMap<u32, u64> = BTreeMap::new();
    // The latest snapshot in which every partition that had bytes in at
    // the kill has been taken up again (a queued one reports no bytes
    // yet): from then on its bytes count what was kept.
    let mut covering: Option<Snapshot> = None;
    let mut last = Snapshot::default();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        let resp = receiver.transfers(0).await.unwrap();
        if resp.layout_version != version {
            break;
        }
        let snap = Snapshot::of(&resp, version);
        for (p, (state, _, from)) in &snap.transfers {
            if midway.contains_key(p) && state != "queued" {
                resumed.entry(*p).or_insert(*from);
            }
        }
        let taken_up = at_kill
            .transfers
            .iter()
            .filter(|(_, (_, bytes, _))| *bytes > 0)
            .all(|(p, _)| snap.transfers.get(p).is_some_and(|(s, _, _)| s != "queued"));
        let all_done = snap.all_done();
        if taken_up {
            covering = Some(snap);
        } else {
            last = snap;
        }
        if all_done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = wait_settled(&cluster, before.version, 4, None, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|e| {
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        });
    println!(
        "[{:>5.1?}] settled: {}",
        started.elapsed(),
        describe(&settled.layout)
    );

    let mut problems = Vec::new();
    println!("resumed from (partition → bytes at restart): {resumed:?}");
    for (p, bytes_at_kill) in &midway {
        match resumed.get(p) {
            Some(from) if *from >= *bytes_at_kill && *from > 0 => {}
            Some(from) => problems.push(format!(
                "partition {p} had {bytes_at_kill} bytes in at the kill but resumed from {from}"
            )),
            None => problems.push(format!(
                "partition {p} (part-way at the kill) was not seen running again after the restart"
            )),
        }
    }
    match &covering {
        Some(snap) => {
            let done = snap.transfers.values().filter(|(s, _, _)| s == "done").count();
            println!(
                "after the restart ({done} of {} partitions done at the last look): {} bytes received by this process; {} bytes transferred for v{version} in all ({} before the kill)",
                snap.transfers.len(),
                snap.bytes_received,
                snap.total(),
                at_kill.total()
            );
            if snap.bytes_received == 0 {
                problems.push("the restarted receiver received nothing".into());
            }
            // Only what was missing is fetched again: the bytes this
            // process received and the bytes in before the kill add up to
            // no more than the total.
            if snap.bytes_received + at_kill.total() > snap.total() {
                problems.push(format!(
                    "the restarted receiver fetched {} bytes, but {} were in before the kill and the total is {}: it started over",
                    snap.bytes_received,
                    at_kill.total(),
                    snap.total()
                ));
            }
        }
        None => problems.push(format!(
            "the partitions in progress at the kill were never all seen taken up again; last: {last:?}"
        )),
    }
    problems.extend(summarize(
        "layout",
        &layout_problems(&settled.layout, &cluster.ids.iter().cloned().collect()),
    ));
    let keys = as_expected(&preloaded);
    let unreadable = read_problems(&cluster.client(), &keys, Level::Quorum).await;
    problems.extend(summarize("reads", &unreadable));
    match wait_placement(&cluster, &settled.layout, &keys, RETIRE_TIMEOUT).await {
        Ok((misplaced, _)) => problems.extend(summarize("placement", &misplaced)),
        Err(e) => problems.push(format!("placement check failed: {e:#}")),
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// `transfer.max_rate` holds: the bytes a joining node receives, sampled
/// while its transfers run, come in at no more than 10% above the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_keep_within_ten_percent_of_the_rate_limit() {
    /// The limit, MB/s (10^6 bytes).
    const LIMIT_MB: f64 = 0.5;
    /// Window the measurement must at least cover.
    const MIN_WINDOW: Duration = Duration::from_secs(4);
    /// Shortest stretch the rate is also held to. Each of the
    /// `transfer.concurrency` (2) transfers may have one chunk (64 KiB)
    /// in beyond what the rate has paid for, so over 4 s the limit may be
    /// exceeded by up to ~6.5% without any fault.
    const SUB_WINDOW: Duration = Duration::from_secs(4);
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let limit = LIMIT_MB.to_string();
    let env = [
        ("RINGKV__CLUSTER__PARTITIONS", PARTITIONS),
        ("RINGKV__TRANSFER__MAX_RATE", limit.as_str()),
        ("RINGKV__TRANSFER__CHUNK_BYTES", "65536"),
    ];
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    // ~4 MB of keys and versions; a fourth node receives ~3/4 of it.
    preload(&cluster.client(), "rate", 4_000, 1_000, 16)
        .await
        .unwrap();
    let new = cluster.add_node(&[]).await.unwrap();
    let receiver = cluster.nodes[new].client();

    // Each reading happened somewhere between sending the request and
    // getting the answer; a stretch between two readings is taken as the
    // longest it can have been, so a slow answer never makes a rate look
    // faster than it was.
    struct Sample {
        sent: Instant,
        answered: Instant,
        bytes: u64,
    }
    let rate_between = |a: &Sample, b: &Sample| {
        let span = b.answered - a.sent;
        ((b.bytes - a.bytes) as f64 / span.as_secs_f64(), span)
    };
    let mut samples: Vec<Sample> = Vec::new();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let sent = Instant::now();
        let resp = receiver.transfers(0).await.unwrap();
        samples.push(Sample {
            sent,
            answered: Instant::now(),
            bytes: resp.bytes_received,
        });
        let layout = receiver.layout().await.unwrap();
        if layout.version > before.version && layout.previous_version == 0 {
            break;
        }
        assert!(
            sent < deadline,
            "the join did not settle: {}",
            describe(&layout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = samples.last().map(|s| s.bytes).unwrap_or(0);
    // From the first sample with bytes in to the first that shows them all.
    let Some(first) = samples.iter().position(|s| s.bytes > 0) else {
        panic!("no bytes were transferred");
    };
    let last = samples
        .iter()
        .position(|s| s.bytes == total)
        .expect("the last sample has the total");
    let (rate, window) = rate_between(&samples[first], &samples[last]);
    let limit_bytes = LIMIT_MB * 1e6;
    // The rate must hold throughout, not only on average: the fastest
    // stretch of at least SUB_WINDOW between the same bounds.
    let running = &samples[first..=last];
    let mut fastest = (0.0f64, Duration::ZERO);
    for (i, a) in running.iter().enumerate() {
        for b in &running[i + 1..] {
            let (r, span) = rate_between(a, b);
            if span >= SUB_WINDOW && r > fastest.0 {
                fastest = (r, span);
            }
        }
    }
    println!(
        "[{:>5.1?}] received {total} bytes; measured {:.3} MB/s over {window:.1?} ({} samples), limit {LIMIT_MB} MB/s ({:.1}% of it); fastest stretch of at least {SUB_WINDOW:?}: {:.3} MB/s over {:.1?}",
        started.elapsed(),
        rate / 1e6,
        samples.len(),
        100.0 * rate / limit_bytes,
        fastest.0 / 1e6,
        fastest.1
    );
    let metric = scrape_metric(&cluster.nodes[new].metrics, "ringkv_transfer_bytes_total").unwrap();
    assert_eq!(
        metric as u64, total,
        "ringkv_transfer_bytes_total disagrees with Transfers.bytes_received"
    );
    assert!(
        window >= MIN_WINDOW,
        "the transfer took {window:?}, too short to measure a rate; preload more"
    );
    assert!(
        rate <= 1.10 * limit_bytes,
        "measured {:.3} MB/s, more than 10% above the limit {LIMIT_MB} MB/s",
        rate / 1e6
    );
    assert!(
        fastest.0 <= 1.10 * limit_bytes,
        "{:.3} MB/s over {:.1?}: more than 10% above the limit {LIMIT_MB} MB/s",
        fastest.0 / 1e6,
        fastest.1
    );
    // The limit, not something else, is what bounds the rate.
    assert!(
        rate >= 0.3 * limit_bytes,
        "measured only {:.3} MB/s against a limit of {LIMIT_MB} MB/s",
        rate / 1e6
    );
}
