//! `remove` of a SIGKILLed node, under a continuous load.

use super::*;

/// `remove` of a SIGKILLed node: the survivors re-replicate its
/// partitions among themselves, so every partition has N = 3 replicas
/// again, and no acknowledged write (before the kill, or while the node
/// was down and being removed) is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_killed_node_restores_three_replicas_and_loses_no_write() {
    let _serial = SERIAL.lock().await;
    let started = Instant::now();
    let mut env = base_env();
    env.push(("RINGKV__TRANSFER__MAX_RATE", CHANGE_RATE));
    let mut cluster = TestCluster::start_with_env(4, &[], &env).await.unwrap();
    let before = cluster.client().layout().await.unwrap();
    // The claimant (lowest id) is the victim: its duties must pass on.
    let victim = (0..4).min_by_key(|i| cluster.ids[*i].clone()).unwrap();
    let survivors: Vec<usize> = (0..4).filter(|i| *i != victim).collect();
    let victim_id = cluster.ids[victim].clone();
    let preloaded = preload(
        &cluster.client(),
        "remove-pre",
        PRELOAD_KEYS,
        PRELOAD_VALUE_BYTES,
        16,
    )
    .await
    .unwrap();

    // A live node cannot be removed: it must leave.
    let refused = cluster.client().remove(&victim_id).await;
    assert!(
        matches!(refused, Err(Error::FailedPrecondition(_))),
        "removing a live node: {refused:?}"
    );

    let load = Load::start(
        &cluster,
        &load_spec("remove", survivors[0]),
        Instant::now() + LOAD_DEADLINE,
    );
    tokio::time::sleep(LOAD_BEFORE).await;
    cluster.nodes[victim].kill();
    println!(
        "[{:>5.1?}] killed node {victim} ({victim_id})",
        started.elapsed()
    );
    for &s in &survivors {
        cluster.wait_liveness(s, victim, "dead").await.unwrap();
    }
    println!("[{:>5.1?}] the survivors see it dead", started.elapsed());
    let admin = cluster.nodes[survivors[0]].grpc.clone();
    let out = cli_async(
        &admin,
        &["cluster", "remove", victim_id.as_str()],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    println!(
        "$ ringkv cluster remove {victim_id}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "remove failed: {out:?}");
    let survivor = cluster.nodes[survivors[1]].client();
    let plan = survivor.plan().await.unwrap();
    println!(
        "plan: {:?}, {} moves (minimum {}), blocked {:?}",
        plan.changes,
        plan.moves.len(),
        plan.minimum_moves,
        plan.blocked
    );
    assert!(
        plan.changes.iter().any(|c| c.contains("remove")),
        "{plan:?}"
    );
    assert!(
        !plan.moves.is_empty(),
        "removing a node moves nothing: {plan:?}"
    );
    assert!(
        plan.moves
            .iter()
            .all(|m| m.from != victim_id && m.to != victim_id),
        "a move involves the dead node: {:?}",
        plan.moves
    );
    let committed = survivor.commit(plan.current_version).await.unwrap();
    println!(
        "[{:>5.1?}] committed v{} with {} moves",
        started.elapsed(),
        committed.version,
        committed.moves
    );
    load.set_in_transition(true);
    let settled = wait_settled(&cluster, before.version, 3, Some(&load), SETTLE_TIMEOUT).await;
    let settled = match settled {
        Ok(s) => s,
        Err(e) => {
            let _ = load.stop().await;
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        }
    };
    println!(
        "[{:>5.1?}] settled (in transition for {:.1?}): {}",
        started.elapsed(),
        settled.transition_lasted,
        describe(&settled.layout)
    );
    tokio::time::sleep(LOAD_AFTER).await;
    let report = load.stop().await.unwrap();
    println!("{report}");

    let mut problems = Vec::new();
    let members: BTreeSet<String> = survivors.iter().map(|i| cluster.ids[*i].clone()).collect();
    check_after_change(
        &cluster,
        &settled,
        &members,
        &report,
        &preloaded,
        DEAD_NODE_READ_ERRORS,
        &mut problems,
    )
    .await;
    // N regained: every replica of every key answers an R = ALL read.
    let mut keys = as_expected(&preloaded);
    keys.extend(report.acknowledged());
    let all = read_problems(&cluster.client(), &keys, Level::All).await;
    problems.extend(summarize("R=ALL reads after the removal", &all));
    println!("[{:>5.1?}] done", started.elapsed());
    assert_no_problems(&cluster, &problems);
}
