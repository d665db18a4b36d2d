//! The read path: a quorum of replica reads (in the old and in the new set
//! while the key's partition moves), merged, trimmed to fit a reply, and
//! read repair of the replicas that answered behind.

use super::*;

impl Coordinator {
    pub async fn get(&self, cmd: GetCommand) -> Result<GetReply> {
        self.check_key(&cmd.key)?;
        let plan = self.plan(&cmd.key, cmd.consistency, Op::Read)?;
        let (asked, reserve) = self.read_targets(&plan);
        let call =
            |node: &NodeId| self.read_call(*node, plan.key.clone(), plan.consistency.timeout);
        let calls = asked.iter().map(call).collect();
        let spares = quorum::Spares {
            calls: reserve.iter().map(|node| (*node, call(node))).collect(),
            after: Duration::from_millis(self.config.cluster.speculative_read_ms),
        };
        // R in every set of the plan (both while the partition moves). The
        // injected bug `read_from_one_replica` (tests of the verification
        // harness only) waits for one answer whatever R is; the reply meta
        // still reports the R asked.
        let needs = match self.config.debug.inject_bug {
            InjectBug::ReadFromOneReplica => vec![quorum::Need::Any(1)],
            _ => plan
                .quorum_sets
                .iter()
                .map(|(set, need)| quorum::Need::Among(set.clone(), *need))
                .collect(),
        };
        let label = |n: &NodeId| self.label(*n);
        let answers = quorum::quorum_with_spares(
            calls,
            asked,
            spares,
            needs,
            Vec::new(),
            plan.consistency.timeout,
            &label,
        )
        .await?;
        if answers.spares_started > 0 {
            self.metrics.speculative_reads(answers.spares_started);
        }
        let mut merged = VersionSet::new();
        for (_, state) in &answers.ok {
            if let Some(state) = state {
                merged.merge(state);
            }
        }
        self.fit_read(&mut merged)?;
        let behind = answers
            .ok
            .iter()
            .filter(|(_, state)| is_behind(state.as_ref(), &merged))
            .count();
        let replicas: Vec<NodeId> = answers.ok.iter().map(|(node, _)| *node).collect();
        let mut meta = self.meta(&plan, &replicas);
        meta.read_repaired = behind as u32;
        if behind > 0 || !answers.pending.is_empty() {
            self.spawn_read_repair(
                plan.key.clone(),
                merged.clone(),
                answers,
                plan.consistency.timeout,
            );
        }
        let now = wall_clock_ms();
        let siblings: Vec<Version> = match cmd.resolve {
            Resolve::AllSiblings => merged.visible(now).into_iter().cloned().collect(),
            Resolve::Lww => merged.lww(now).into_iter().cloned().collect(),
        };
        Ok(GetReply {
            siblings,
            context: merged.context().clone(),
            meta,
        })
    }

    /// The replicas a read asks at once, and those it keeps in reserve
    /// (asked one `cluster.speculative_read_ms` after the start if the
    /// quorum is not met by then, and one for every replica that fails).
    ///
    /// A read asks R replicas: this node first when it is one (a local read
    /// costs no message), then the others alive, in an order that depends
    /// on the key's partition so reads spread over the replicas while each
    /// key's reads find the same warm cache. While the key's partition
    /// moves, and with `cluster.speculative_read_ms = 0`, it asks every
    /// replica at once.
    fn read_targets(&self, plan: &Plan) -> (Vec<NodeId>, Vec<NodeId>) {
        let spread = self.config.cluster.speculative_read_ms > 0;
        let [(_, required)] = plan.quorum_sets.as_slice() else {
            return (plan.replicas.clone(), Vec::new());
        };
        if !spread {
            return (plan.replicas.clone(), Vec::new());
        }
        let me = self.node_id();
        let mut others: Vec<NodeId> = plan.replicas.iter().copied().filter(|n| *n != me).collect();
        if !others.is_empty() {
            let turn = self.replica.partition_of(&plan.key) as usize % others.len();
            others.rotate_left(turn);
        }
        let (alive, down): (Vec<NodeId>, Vec<NodeId>) =
            others.into_iter().partition(|n| self.cluster.is_alive(*n));
        let mut order = Vec::with_capacity(plan.replicas.len());
        if plan.replicas.contains(&me) {
            order.push(me);
        }
        order.extend(alive);
        order.extend(down);
        let reserve = order.split_off((*required).min(order.len()));
        (order, reserve)
    }

    /// Keeps a read's merged state within the key state limit, by the rule
    /// replicas apply when they merge the same answers (the oldest siblings
    /// collapse), so the reply fits its message and read repair sends a
    /// state replicas accept. Replicas that each accepted a different large
    /// sibling are the only way to get here. A state that still does not
    /// fit (stored before the limit existed) is a server-side error, never
    /// the client's.
    fn fit_read(&self, merged: &mut VersionSet) -> Result<()> {
        let limit = self.config.limits.max_key_state_bytes;
        let collapsed = merged.fit_within(limit);
        if collapsed > 0 {
            self.metrics.siblings_collapsed(collapsed);
        }
        let bytes = merged.encoded_len();
        if bytes > limit {
            return Err(Error::KeyStateTooLarge {
                what: "read refused: the replicas' merged state holds".into(),
                siblings: merged.versions().len(),
                bytes,
                limit,
            });
        }
        Ok(())
    }

    /// The members a write's context entries are checked against (see
    /// [`LocalWrite::members`]); none are needed without a context.
    pub(super) fn context_members(&self, context: &Option<VersionVector>) -> Vec<NodeId> {
        match context {
            Some(_) => self.cluster.member_ids(),
            None => Vec::new(),
        }
    }

    /// Keeps listening for the replicas that had not answered, then sends
    /// the merged state to every replica found behind it. Called only when
    /// there is one of either.
    fn spawn_read_repair(
        &self,
        key: Bytes,
        mut merged: VersionSet,
        answers: quorum::Answers<NodeId, Option<VersionSet>>,
        timeout: Duration,
    ) {
        let quorum::Answers {
            ok, mut pending, ..
        } = answers;
        let wait = Duration::from_millis(self.config.repair.read_repair_wait_ms);
        let replica = self.replica.clone();
        let cluster = self.cluster.clone();
        let metrics = self.metrics.clone();
        let me = self.node_id();
        let max_state = self.config.limits.max_key_state_bytes;
        tokio::spawn(async move {
            let mut states = ok;
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            while !pending.is_empty() {
                tokio::select! {
                    next = pending.next() => match next {
                        Some((node, Ok(state))) => {
                            if let Some(s) = &state {
                                merged.merge(s);
                                merged.fit_within(max_state);
                            }
                            states.push((node, state));
                        }
                        Some((_, Err(_))) => {}
                        None => break,
                    },
                    _ = &mut deadline => break,
                }
            }
            for (node, state) in states {
                if !is_behind(state.as_ref(), &merged) {
                    continue;
                }
                let repaired = if node == me {
                    replica.merge(key.clone(), merged.clone()).await.is_ok()
                } else {
                    let encoded = Bytes::from(merged.encode());
                    cluster
                        .peers()
                        .replicate(node, key.clone(), encoded, timeout)
                        .await
                        .is_ok()
                };
                if repaired {
                    metrics.read_repaired(1);
                }
            }
        });
    }

    fn read_call(
        &self,
        node: NodeId,
        key: Bytes,
        timeout: Duration,
    ) -> quorum::Call<NodeId, Option<VersionSet>> {
        if node == self.node_id() {
            let replica = self.replica.clone();
            return quorum::call(node, async move { replica.read(key).await });
        }
        let cluster = self.cluster.clone();
        quorum::call(node, async move {
            Ok(cluster.peers().read(node, key, timeout).await?)
        })
    }
}

/// Whether a replica's answer lacks something the merged state has.
fn is_behind(state: Option<&VersionSet>, merged: &VersionSet) -> bool {
    match state {
        None => !merged.is_empty(),
        Some(s) => s != merged,
    }
}
