//! The one quorum helper: every fan-out to replicas goes through [`quorum`].
//!
//! The caller hands over one future per replica and says how many must
//! succeed and by when. The helper returns as soon as `required` answers
//! succeeded, fails with `Unavailable` as soon as that has become
//! impossible, and fails with `Timeout` when the deadline passes first.
//! Answers still in flight when the quorum is reached are handed back
//! ([`Answers::pending`]) so a read can keep listening for them and repair
//! the replicas that turn out to be behind.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::error::{Error, ReplicaError, Result};

/// A boxed, owned call to the replica `N` (a node id), so the unfinished
/// ones can outlive the request.
pub type Call<N, T> = Pin<Box<dyn Future<Output = (N, Result<T>)> + Send + 'static>>;

/// Replica calls still running when the quorum was reached.
pub type Pending<N, T> = FuturesUnordered<Call<N, T>>;

/// How replicas are named in errors ("id@address").
pub type Label<'a, N> = &'a (dyn Fn(&N) -> String + Sync);

/// Builds a [`Call`] for the replica `node`.
pub fn call<N, T, F>(node: N, fut: F) -> Call<N, T>
where
    N: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    Box::pin(async move { (node, fut.await) })
}

/// The answers that made the quorum.
pub struct Answers<N, T> {
    /// Successful answers, in arrival order, by replica.
    pub ok: Vec<(N, T)>,
    /// Replicas that failed before the quorum was reached.
    pub failed: Vec<ReplicaError>,
    /// Replica calls still running.
    pub pending: Pending<N, T>,
    /// Spares started (see [`Spares`]).
    pub spares_started: usize,
}

/// Runs `calls` until `required` of them succeed.
///
/// `already` counts successes obtained before the fan-out (the coordinator's
/// own local write), so the error reports the whole picture; `label` names
/// replicas in errors.
pub async fn quorum<N, T>(
    calls: Vec<Call<N, T>>,
    required: usize,
    already: Vec<N>,
    timeout: Duration,
    label: Label<'_, N>,
) -> Result<Answers<N, T>>
where
    N: Clone + PartialEq + Send + 'static,
    T: Send + 'static,
{
    quorum_of(
        calls,
        Vec::new(),
        vec![Need::Any(required)],
        already,
        timeout,
        label,
    )
    .await
}

/// What a quorum needs.
#[derive(Clone, Debug)]
pub enum Need<N> {
    /// This many successes, from anyone.
    Any(usize),
    /// This many successes among these replicas.
    Among(Vec<N>, usize),
}

impl<N: PartialEq> Need<N> {
    fn required(&self) -> usize {
        match self {
            Need::Any(r) | Need::Among(_, r) => *r,
        }
    }

    /// Successes among `names` that count for this need.
    fn count<'a>(&self, names: impl Iterator<Item = &'a N>) -> usize
    where
        N: 'a,
    {
        match self {
            Need::Any(_) => names.count(),
            Need::Among(set, _) => names.filter(|n| set.contains(n)).count(),
        }
    }
}

/// Calls held in reserve (speculative reads): not started with the others,
/// but one `after` the start if the needs are not met by then, and one for
/// every call that fails. Those never started when the needs are met are
/// dropped, never sent.
pub struct Spares<N, T> {
    /// (replica, call), in the order they may start.
    pub calls: VecDeque<(N, Call<N, T>)>,
    pub after: Duration,
}

impl<N, T> Spares<N, T> {
    /// No spares.
    pub fn none() -> Self {
        Self {
            calls: VecDeque::new(),
            after: Duration::ZERO,
        }
    }
}

/// Runs `calls` (to `targets`, in the same order; only needed for
/// [`Need::Among`]) until every need is met: a request while its partition
/// moves needs its quorum among the old replicas and among the new ones. Fails with
/// `Unavailable` as soon as a need cannot be met, `Timeout` at the
/// deadline; the error reports the first need still unmet.
pub async fn quorum_of<N, T>(
    calls: Vec<Call<N, T>>,
    targets: Vec<N>,
    needs: Vec<Need<N>>,
    already: Vec<N>,
    timeout: Duration,
    label: Label<'_, N>,
) -> Result<Answers<N, T>>
where
    N: Clone + PartialEq + Send + 'static,
    T: Send + 'static,
{
    quorum_with_spares(
        calls,
        targets,
        Spares::none(),
        needs,
        already,
        timeout,
        label,
    )
    .await
}

/// [`quorum_of`] with calls in reserve ([`Spares`]): a read asks R
/// replicas, and another only when one of them is slow or fails.
pub async fn quorum_with_spares<N, T>(
    calls: Vec<Call<N, T>>,
    targets: Vec<N>,
    spares: Spares<N, T>,
    needs: Vec<Need<N>>,
    already: Vec<N>,
    timeout: Duration,
    label: Label<'_, N>,
) -> Result<Answers<N, T>>
where
    N: Clone + PartialEq + Send + 'static,
    T: Send + 'static,
{
    let Spares {
        calls: mut reserve,
        after,
    } = spares;
    // Spare replicas count as outstanding: they may still be asked.
    let mut outstanding = targets;
    outstanding.extend(reserve.iter().map(|(node, _)| node.clone()));
    let mut pending: Pending<N, T> = calls.into_iter().collect();
    let mut answers = Answers {
        ok: Vec::new(),
        failed: Vec::new(),
        pending: FuturesUnordered::new(),
        spares_started: 0,
    };
    let acked = |answers: &Answers<N, T>| -> Vec<N> {
        already
            .iter()
            .cloned()
            .chain(answers.ok.iter().map(|(n, _)| n.clone()))
            .collect()
    };
    // The first need that the successes so far leave unmet.
    let unmet = |acked: &[N]| needs.iter().find(|n| n.count(acked.iter()) < n.required());
    // The first need that cannot be met even if every running call succeeds.
    let hopeless = |acked: &[N], outstanding: &[N], running: usize| {
        needs.iter().find(|n| {
            let possible = match n {
                Need::Any(_) => acked.len() + running,
                Need::Among(..) => n.count(acked.iter().chain(outstanding)),
            };
            possible < n.required()
        })
    };
    let labels = |nodes: &[N]| nodes.iter().map(label).collect::<Vec<String>>();
    let unavailable = |need: &Need<N>, acked: Vec<N>, failed| Error::Unavailable {
        needed: need.required(),
        got: need.count(acked.iter()),
        acked: labels(&acked),
        failed,
    };
    if let Some(need) = hopeless(&already, &outstanding, pending.len() + reserve.len()) {
        return Err(unavailable(need, already.clone(), Vec::new()));
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let speculate = tokio::time::sleep(after);
    tokio::pin!(speculate);
    let mut speculated = false;
    loop {
        let so_far = acked(&answers);
        let Some(need) = unmet(&so_far) else { break };
        if pending.is_empty() {
            match reserve.pop_front() {
                Some((_, spare)) => {
                    pending.push(spare);
                    answers.spares_started += 1;
                }
                None => return Err(unavailable(need, so_far, answers.failed)),
            }
        }
        tokio::select! {
            next = pending.next() => {
                let Some((node, result)) = next else { continue };
                if let Some(i) = outstanding.iter().position(|l| *l == node) {
                    outstanding.swap_remove(i);
                }
                match result {
                    Ok(value) => answers.ok.push((node, value)),
                    Err(e) => {
                        answers.failed.push(ReplicaError { node: label(&node), error: e.to_string() });
                        // A failed call is replaced at once by a spare.
                        if let Some((_, spare)) = reserve.pop_front() {
                            pending.push(spare);
                            answers.spares_started += 1;
                        }
                        if let Some(need) = hopeless(&so_far, &outstanding, pending.len() + reserve.len()) {
                            return Err(unavailable(need, so_far, answers.failed));
                        }
                    }
                }
            }
            _ = &mut speculate, if !speculated && !reserve.is_empty() => {
                speculated = true;
                if let Some((_, spare)) = reserve.pop_front() {
                    pending.push(spare);
                    answers.spares_started += 1;
                }
            }
            _ = &mut deadline => {
                return Err(Error::Timeout {
                    needed: need.required(),
                    got: need.count(so_far.iter()),
                    acked: labels(&so_far),
                    failed: answers.failed,
                });
            }
        }
    }
    answers.pending = pending;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(node: &&'static str) -> String {
        node.to_string()
    }

    fn ok(node: &'static str, delay_ms: u64) -> Call<&'static str, u32> {
        call(node, async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok(1)
        })
    }

    fn fail(node: &'static str) -> Call<&'static str, u32> {
        call(node, async { Err(Error::Storage("disk".into())) })
    }

    #[tokio::test(start_paused = true)]
    async fn returns_at_quorum_and_hands_back_the_rest() {
        let answers = quorum(
            vec![ok("a", 1), ok("b", 2), ok("c", 500)],
            2,
            vec![],
            Duration::from_secs(1),
            &name,
        )
        .await
        .unwrap();
        let names: Vec<_> = answers.ok.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(answers.pending.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_fast_when_quorum_is_impossible() {
        let err = quorum(
            vec![fail("a"), fail("b"), ok("c", 500)],
            2,
            vec![],
            Duration::from_secs(1),
            &name,
        )
        .await
        .err()
        .unwrap();
        match err {
            Error::Unavailable {
                needed,
                got,
                failed,
                ..
            } => {
                assert_eq!((needed, got), (2, 0));
                assert_eq!(failed.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_what_it_got() {
        let err = quorum(
            vec![ok("a", 1), ok("b", 5_000)],
            3,
            vec!["self"],
            Duration::from_secs(1),
            &name,
        )
        .await
        .err()
        .unwrap();
        // The local ack plus "a" make 2 of the 3 needed.
        match err {
            Error::Timeout {
                needed, got, acked, ..
            } => {
                assert_eq!((needed, got), (3, 2));
                assert_eq!(acked, vec!["self".to_string(), "a".to_string()]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_moving_partition_needs_its_quorum_in_both_sets() {
        let old = Need::Among(vec!["self", "a", "b"], 2);
        let new = Need::Among(vec!["self", "a", "d"], 2);
        // "a" fails: the old set still has self + b, the new set self + d.
        let answers = quorum_of(
            vec![fail("a"), ok("b", 1), ok("d", 50)],
            vec!["a", "b", "d"],
            vec![old.clone(), new.clone()],
            vec!["self"],
            Duration::from_secs(1),
            &name,
        )
        .await
        .unwrap();
        let names: Vec<_> = answers.ok.iter().map(|(n, _)| *n).collect();
        // b alone met the old set's need; the call waited for d.
        assert_eq!(names, vec!["b", "d"]);
        // Without d the new set cannot reach 2, whatever the old set does.
        let err = quorum_of(
            vec![ok("a", 1), ok("b", 1), fail("d")],
            vec!["a", "b", "d"],
            vec![old, Need::Among(vec!["d", "e"], 2)],
            vec!["self"],
            Duration::from_secs(1),
            &name,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(
                err,
                Error::Unavailable {
                    needed: 2,
                    got: 0,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn counts_prior_acks_and_needs_no_calls_when_satisfied() {
        let answers = quorum::<_, u32>(vec![], 1, vec!["self"], Duration::from_secs(1), &name)
            .await
            .unwrap();
        assert!(answers.ok.is_empty());
        let err = quorum::<_, u32>(vec![], 2, vec!["self"], Duration::from_secs(1), &name)
            .await
            .err()
            .unwrap();
        assert!(matches!(
            err,
            Error::Unavailable {
                needed: 2,
                got: 1,
                ..
            }
        ));
    }

    fn spares(
        after_ms: u64,
        calls: Vec<Call<&'static str, u32>>,
        names: &[&'static str],
    ) -> Spares<&'static str, u32> {
        Spares {
            calls: names.iter().copied().zip(calls).collect(),
            after: Duration::from_millis(after_ms),
        }
    }

    fn any(required: usize) -> Vec<Need<&'static str>> {
        vec![Need::Any(required)]
    }

    #[tokio::test(start_paused = true)]
    async fn a_spare_starts_when_a_call_is_slow() {
        let started = tokio::time::Instant::now();
        let answers = quorum_with_spares(
            vec![ok("a", 1), ok("b", 500)],
            vec!["a", "b"],
            spares(10, vec![ok("c", 1)], &["c"]),
            any(2),
            vec![],
            Duration::from_secs(1),
            &name,
        )
        .await
        .unwrap();
        let names: Vec<_> = answers.ok.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, vec!["a", "c"]);
        assert_eq!(started.elapsed(), Duration::from_millis(11));
        assert_eq!(answers.spares_started, 1);
        // The slow call is handed back for read repair.
        assert_eq!(answers.pending.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spare_not_needed_is_never_sent() {
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = sent.clone();
        let spare = call("c", async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(1)
        });
        let answers = quorum_with_spares(
            vec![ok("a", 1), ok("b", 2)],
            vec!["a", "b"],
            spares(10, vec![spare], &["c"]),
            any(2),
            vec![],
            Duration::from_secs(1),
            &name,
        )
        .await
        .unwrap();
        assert_eq!(answers.ok.len(), 2);
        assert_eq!(answers.spares_started, 0);
        assert!(answers.pending.is_empty());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!sent.load(std::sync::atomic::Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_call_starts_a_spare_at_once() {
        let started = tokio::time::Instant::now();
        let answers = quorum_with_spares(
            vec![fail("a"), ok("b", 1)],
            vec!["a", "b"],
            spares(900, vec![ok("c", 1)], &["c"]),
            vec![Need::Among(vec!["a", "b", "c"], 2)],
            vec![],
            Duration::from_secs(1),
            &name,
        )
        .await
        .unwrap();
        let mut names: Vec<_> = answers.ok.iter().map(|(n, _)| *n).collect();
        names.sort();
        assert_eq!(names, vec!["b", "c"]);
        assert!(started.elapsed() < Duration::from_millis(10));
        assert_eq!(answers.failed.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fails_once_spares_cannot_make_the_quorum() {
        let err = quorum_with_spares(
            vec![fail("a"), fail("b")],
            vec!["a", "b"],
            spares(900, vec![ok("c", 1)], &["c"]),
            any(2),
            vec![],
            Duration::from_secs(1),
            &name,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(err, Error::Unavailable { needed: 2, .. }),
            "{err:?}"
        );
    }
}
