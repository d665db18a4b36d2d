//! Growing 3 → 5 and shrinking 5 → 3 with `leave`, under a continuous load.

use super::*;

/// Grow 3 → 5 while two clients write and read continuously (N = 3,
/// QUORUM): no acknowledged write is lost, reads fail only with retryable
/// errors, and afterwards every key is on exactly its final replicas (old
/// copies deleted), with each node's share of replicas within ±10% of its
/// weight share. The two new nodes have weight 2, so the weights matter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_from_three_to_five_nodes_under_load_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut env = base_env();
    env.push(("RINGKV__TRANSFER__MAX_RATE", CHANGE_RATE));
    let mut cluster = TestCluster::start_with_env(3, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    assert_eq!(layout_members(&before).len(), 3, "{}", describe(&before));
    let preloaded = preload(
        &cluster.client(),
        "grow-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();

    let load = Load::start(
        &cluster,
        &load_spec("grow", 0),
        Instant::now() + LOAD_DEADLINE,
    );
    tokio::time::sleep(LOAD_BEFORE).await;
    // Both start before either is ready, so auto_join can take them in
    // one change (it waits a few gossip rounds for that).
    let weight2 = [("RINGKV__NODE__WEIGHT", "2")];
    let a = cluster.spawn_node(&weight2).unwrap();
    let b = cluster.spawn_node(&weight2).unwrap();
    cluster.wait_node_ready(a).await.unwrap();
    cluster.wait_node_ready(b).await.unwrap();
    let change_started = Instant::now();
    if let Some(l) = wait_transition(&cluster, before.version, Duration::from_secs(30)).await {
        load.set_in_transition(true);
        println!(
            "[{:>5.1?}] auto_join committed: {}",
            started.elapsed(),
            describe(&l)
        );
        // Let the transfers get going, so the CLI has progress to show.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        print_cli_transfers(&cluster.nodes[0].grpc).await;
    }
    let settled = wait_settled(&cluster, before.version, 5, Some(&load), SETTLE_TIMEOUT).await;
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            let _ = load.stop().await;
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        }
    };
    println!(
        "[{:>5.1?}] settled {:.1?} after the new nodes were up (in transition for {:.1?}): {}",
        started.elapsed(),
        change_started.elapsed(),
        settled.transition_lasted,
        describe(&settled.layout)
    );
    println!("shares: {}", shares(&settled.layout));
    tokio::time::sleep(LOAD_AFTER).await;
    let report = load.stop().await.unwrap();
    println!("{report}");

    let mut problems = Vec::new();
    let members: BTreeSet<String> = cluster.ids.iter().cloned().collect();
    check_after_change(
        &cluster,
        &settled,
        &members,
        &report,
        &preloaded,
        HAND_OVER_READ_ERRORS,
        &mut problems,
    )
    .await;
    for m in &settled.layout.members {
        if m.status != "up" {
            problems.push(format!(
                "member {} has status {:?}, not up",
                m.node_id, m.status
            ));
        }
    }
    for i in [a, b] {
        let received = cluster.nodes[i]
            .client()
            .transfers(0)
            .await
            .unwrap()
            .bytes_received;
        let metric = scrape_metric(&cluster.nodes[i].metrics, "ringkv_transfer_bytes_total");
        println!("node {i} received {received} bytes by transfers (metric: {metric:?})");
        if received == 0 {
            problems.push(format!("new node {i} reports no transferred bytes"));
        }
        match metric {
            Ok(v) if v as u64 == received => {}
            other => problems.push(format!(
                "node {i}: ringkv_transfer_bytes_total is {other:?}, Transfers says {received}"
            )),
        }
    }
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// Shrink 5 → 3 with `leave` under the same load: the leaving nodes are
/// drained by `ringkv cluster commit --wait`, end with status `left`
/// owning nothing, hold no data, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shrinking_from_five_to_three_with_leave_under_load_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut env = base_env();
    env.push(("RINGKV__TRANSFER__MAX_RATE", CHANGE_RATE));
    let cluster = TestCluster::start_with_env(5, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    assert_eq!(layout_members(&before).len(), 5, "{}", describe(&before));
    // The lowest id is the claimant, which then drains itself; and the
    // highest. Ids are fixed-width hex, so string order is numeric order.
    let mut by_id: Vec<usize> = (0..5).collect();
    by_id.sort_by(|x, y| cluster.ids[*x].cmp(&cluster.ids[*y]));
    let leavers = [by_id[0], by_id[4]];
    let stayers: Vec<usize> = (0..5).filter(|i| !leavers.contains(i)).collect();
    println!(
        "leaving: nodes {leavers:?} ({}, {}), staying: {stayers:?}",
        cluster.ids[leavers[0]], cluster.ids[leavers[1]]
    );
    let preloaded = preload(
        &cluster.client(),
        "shrink-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();

    let load = Load::start(
        &cluster,
        &load_spec("shrink", stayers[0]),
        Instant::now() + LOAD_DEADLINE,
    );
    tokio::time::sleep(LOAD_BEFORE).await;
    let admin = &cluster.nodes[stayers[0]].grpc;
    // One leave through the CLI, one through the library; both name a
    // node other than the one asked, which forwards to it.
    let out = cli_async(
        admin,
        &["cluster", "leave", cluster.ids[leavers[0]].as_str()],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    println!(
        "$ ringkv cluster leave {}\n{}{}",
        cluster.ids[leavers[0]],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "leave failed: {out:?}");
    cluster.nodes[stayers[1]]
        .client()
        .leave(Some(cluster.ids[leavers[1]].as_str()))
        .await
        .unwrap();

    // The leaves reach the claimant by gossip.
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let plan = cluster.nodes[stayers[0]].client().plan().await.unwrap();
        if plan.changes.len() == 2 {
            break plan;
        }
        assert!(
            Instant::now() < deadline,
            "the plan does not show both leaves: {:?}",
            plan.changes
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "plan: {:?}, {} moves (minimum {})",
        plan.changes,
        plan.moves.len(),
        plan.minimum_moves
    );
    let leaver_ids: BTreeSet<&String> = leavers.iter().map(|i| &cluster.ids[*i]).collect();
    assert!(
        plan.moves.iter().all(|m| !leaver_ids.contains(&m.to)),
        "a leaving node gains partitions: {:?}",
        plan.moves
    );

    let commit = tokio::spawn({
        let admin = admin.clone();
        async move {
            cli_async(
                &admin,
                &["cluster", "commit", "--wait"],
                SETTLE_TIMEOUT + Duration::from_secs(30),
            )
            .await
        }
    });
    let settled = wait_settled(&cluster, before.version, 3, Some(&load), SETTLE_TIMEOUT).await;
    let commit = commit.await.unwrap();
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            let _ = load.stop().await;
            assert_no_problems(&cluster, &[format!("{e:#}"), format!("commit: {commit:?}")]);
            unreachable!()
        }
    };
    let mut problems = Vec::new();
    match &commit {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            println!(
                "$ ringkv cluster commit --wait (exit {:?})\n{stdout}{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
            if !out.status.success() || !stdout.contains("in force") {
                problems.push(format!(
                    "`ringkv cluster commit --wait` did not end well: {out:?}"
                ));
            }
        }
        Err(e) => problems.push(format!("`ringkv cluster commit --wait`: {e:#}")),
    }
    println!(
        "[{:>5.1?}] settled (in transition for {:.1?}): {}",
        started.elapsed(),
        settled.transition_lasted,
        describe(&settled.layout)
    );
    println!("shares: {}", shares(&settled.layout));
    tokio::time::sleep(LOAD_AFTER).await;
    let report = load.stop().await.unwrap();
    println!("{report}");

    // The leavers declare themselves `left` once they see the settled
    // layout; the others learn it by gossip.
    let deadline = Instant::now() + Duration::from_secs(30);
    let observer = cluster.nodes[stayers[0]].client();
    let left = loop {
        let members = observer.members().await.unwrap();
        let left: Vec<&pb::Member> = members
            .iter()
            .filter(|m| leaver_ids.contains(&m.node_id))
            .collect();
        if (left.len() == 2 && left.iter().all(|m| m.status == "left")) || Instant::now() > deadline
        {
            break left.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for m in &left {
        println!(
            "leaver {}: status {}, liveness {}, partitions owned {}",
            m.node_id, m.status, m.liveness, m.partitions_owned
        );
        if m.status != "left" || m.partitions_owned != 0 {
            problems.push(format!(
                "leaver {} has status {:?} and owns {} partitions; expected left and 0",
                m.node_id, m.status, m.partitions_owned
            ));
        }
    }
    if left.len() != 2 {
        problems.push(format!(
            "the members list shows {} of the 2 leavers",
            left.len()
        ));
    }
    let members: BTreeSet<String> = stayers.iter().map(|i| cluster.ids[*i].clone()).collect();
    check_after_change(
        &cluster,
        &settled,
        &members,
        &report,
        &preloaded,
        HAND_OVER_READ_ERRORS,
        &mut problems,
    )
    .await;
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}

/// Grow 3 → 4 under load on a secured cluster: the new node gets its
/// certificates, joins over mutual TLS, receives its partitions by
/// transfers over mutual TLS, and the clients reach every node with TLS
/// and a token. Nothing acknowledged is lost and placement is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secured_cluster_grows_under_load_and_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut env = base_env();
    env.push(("RINGKV__TRANSFER__MAX_RATE", CHANGE_RATE));
    let mut cluster = TestCluster::start_secured(3, &[], &env, Secure::AUTH)
        .await
        .unwrap();
    let before = cluster.client().layout().await.unwrap();
    let preloaded = preload(
        &cluster.client(),
        "secure-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();
    let load = Load::start(
        &cluster,
        &load_spec("secure", 0),
        Instant::now() + LOAD_DEADLINE,
    );
    tokio::time::sleep(LOAD_BEFORE).await;
    let added = cluster.add_node(&[]).await.unwrap();
    if wait_transition(&cluster, before.version, Duration::from_secs(30))
        .await
        .is_some()
    {
        load.set_in_transition(true);
    }
    let settled = match wait_settled(&cluster, before.version, 4, Some(&load), SETTLE_TIMEOUT).await
    {
        Ok(s) => s,
        Err(e) => {
            let _ = load.stop().await;
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        }
    };
    println!(
        "[{:>5.1?}] settled: {}",
        started.elapsed(),
        describe(&settled.layout)
    );
    tokio::time::sleep(LOAD_AFTER).await;
    let report = load.stop().await.unwrap();
    println!("{report}");
    let mut problems = Vec::new();
    let members: BTreeSet<String> = cluster.ids.iter().cloned().collect();
    check_after_change(
        &cluster,
        &settled,
        &members,
        &report,
        &preloaded,
        HAND_OVER_READ_ERRORS,
        &mut problems,
    )
    .await;
    let received = cluster.nodes[added]
        .client()
        .transfers(0)
        .await
        .unwrap()
        .bytes_received;
    if received == 0 {
        problems.push("the new node reports no transferred bytes".into());
    }
    assert_no_problems(&cluster, &problems);
}
