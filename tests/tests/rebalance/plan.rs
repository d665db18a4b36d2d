//! Plans: size against the minimum, `auto_join = false`, stale and concurrent commits.

use super::*;

/// A plan that adds one node copies at most 1.2x the minimum number of
/// partition replicas and says so (`ringkv cluster plan`); with
/// `cluster.auto_join = false` the node waits for `join`; stale and
/// concurrent commits are refused with FAILED_PRECONDITION and a change
/// is never applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_adding_one_node_moves_at_most_1_2x_the_minimum() {
    let _serial = SERIAL.lock().await;
    let mut cluster = TestCluster::start_with_env(3, &[], &base_env())
        .await
        .unwrap();
    let before = cluster.client().layout().await.unwrap();
    preload(&cluster.client(), "plan", 300, 1_000, 16)
        .await
        .unwrap();
    let new = cluster
        .add_node(&[("RINGKV__CLUSTER__AUTO_JOIN", "false")])
        .await
        .unwrap();
    let new_id = cluster.ids[new].clone();
    // Through an old node: the new one is not a member yet.
    let client = cluster.nodes[0].client();

    // Without auto_join nothing happens by itself.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = client.plan().await.unwrap();
    assert!(idle.changes.is_empty(), "staged without join: {idle:?}");
    assert_eq!(client.layout().await.unwrap().version, before.version);
    let nothing = client.commit(before.version).await;
    assert!(
        matches!(nothing, Err(Error::FailedPrecondition(_))),
        "commit with nothing staged: {nothing:?}"
    );

    let message = cluster.nodes[new]
        .client()
        .join(0, &cluster.nodes[0].peer)
        .await
        .unwrap();
    println!("join: {message}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let plan = client.plan().await.unwrap();
        if !plan.changes.is_empty() {
            break plan;
        }
        assert!(Instant::now() < deadline, "the join was never staged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let out = cli_async(
        &cluster.nodes[0].grpc,
        &["cluster", "plan"],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "$ ringkv cluster plan\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("minimum possible"),
        "{out:?}"
    );
    let out = cli_async(
        &cluster.nodes[1].grpc,
        &["--output", "json", "cluster", "plan"],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --output json is not JSON ({e}): {out:?}"));

    assert_eq!(plan.current_version, before.version);
    assert!(plan.blocked.is_empty(), "{plan:?}");
    assert_eq!(plan.changes.len(), 1, "{plan:?}");
    assert!(plan.minimum_moves > 0, "{plan:?}");
    let ratio = plan.moves.len() as f64 / plan.minimum_moves as f64;
    println!(
        "plan moves {} partition replicas, minimum {}: {ratio:.2}x",
        plan.moves.len(),
        plan.minimum_moves
    );
    assert!(
        plan.moves.len() as f64 <= 1.2 * plan.minimum_moves as f64,
        "the plan moves {} replicas, more than 1.2x the minimum {}",
        plan.moves.len(),
        plan.minimum_moves
    );
    assert!(
        plan.moves.iter().all(|m| m.to == new_id),
        "adding a node moves replicas between old nodes: {:?}",
        plan.moves
    );
    assert_eq!(json["move_count"], plan.moves.len(), "{json}");
    assert_eq!(json["minimum_moves"], plan.minimum_moves, "{json}");
    for m in &plan.members {
        let deviation = (f64::from(m.replicas_after) - m.target_share) / m.target_share;
        assert!(
            deviation.abs() <= 0.10,
            "{} would hold {} replicas against a share of {:.1}",
            m.node_id,
            m.replicas_after,
            m.target_share
        );
    }

    // A stale plan is refused.
    let stale = client.commit(before.version + 1).await;
    assert!(
        matches!(stale, Err(Error::FailedPrecondition(_))),
        "stale commit: {stale:?}"
    );
    // Two commits of the same plan at once, through different nodes:
    // exactly one is applied.
    let (c0, c1) = (cluster.nodes[0].client(), cluster.nodes[2].client());
    let (r0, r1) = tokio::join!(
        c0.commit(plan.current_version),
        c1.commit(plan.current_version)
    );
    println!("concurrent commits: {r0:?} / {r1:?}");
    let applied: Vec<&pb::CommitResponse> = [&r0, &r1].into_iter().flatten().collect();
    assert_eq!(applied.len(), 1, "{r0:?} / {r1:?}");
    for r in [&r0, &r1] {
        if let Err(e) = r {
            assert!(matches!(e, Error::FailedPrecondition(_)), "{e:?}");
        }
    }
    let committed = *applied[0];
    assert_eq!(committed.version, before.version + 1);
    assert_eq!(committed.moves as usize, plan.moves.len());
    // Committing the same plan again is stale.
    let again = client.commit(plan.current_version).await;
    assert!(
        matches!(again, Err(Error::FailedPrecondition(_))),
        "second commit: {again:?}"
    );

    let settled = wait_settled(&cluster, before.version, 4, None, SETTLE_TIMEOUT)
        .await
        .unwrap_or_else(|e| {
            assert_no_problems(&cluster, &[format!("{e:#}")]);
            unreachable!()
        });
    println!(
        "settled: {}; shares: {}",
        describe(&settled.layout),
        shares(&settled.layout)
    );
    assert_eq!(
        settled.layout.version,
        committed.version + 1,
        "one change, retired once"
    );
    // The layout in force is the plan: the same replicas moved.
    let old: BTreeMap<u32, &Vec<String>> = before
        .assignments
        .iter()
        .map(|a| (a.partition, &a.replicas))
        .collect();
    let mut moved = BTreeSet::new();
    for a in &settled.layout.assignments {
        for r in &a.replicas {
            if !old.get(&a.partition).is_some_and(|o| o.contains(r)) {
                moved.insert((a.partition, r.clone()));
            }
        }
    }
    let planned: BTreeSet<(u32, String)> = plan
        .moves
        .iter()
        .map(|m| (m.partition, m.to.clone()))
        .collect();
    assert_eq!(moved, planned, "the layout in force is not the plan");
    let problems = share_problems(&settled.layout);
    assert!(problems.is_empty(), "{problems:?}");
    let done = client.commit(settled.layout.version).await;
    assert!(
        matches!(done, Err(Error::FailedPrecondition(_))),
        "commit after the change, with nothing staged: {done:?}"
    );
}
