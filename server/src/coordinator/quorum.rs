//! The one quorum helper: every fan-out to replicas goes through [`quorum`].
//!
//! The caller hands over one future per replica and says how many must
//! succeed and by when. The helper returns as soon as `required` answers
//! succeeded, fails with `Unavailable` as soon as that has become
//! impossible, and fails with `Timeout` when the deadline passes first.
//! Answers still in flight when the quorum is reached are handed back
//! ([`Answers::pending`]) so a read can keep listening for them and repair
//! the replicas that turn out to be behind.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

use crate::error::{Error, ReplicaError, Result};

/// A boxed, owned replica call, so the unfinished ones can outlive the request.
pub type Call<T> = Pin<Box<dyn Future<Output = (String, Result<T>)> + Send + 'static>>;

/// Replica calls still running when the quorum was reached.
pub type Pending<T> = FuturesUnordered<Call<T>>;

/// Builds a [`Call`] for the replica named `node`.
pub fn call<T, F>(node: String, fut: F) -> Call<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
{
    Box::pin(async move { (node, fut.await) })
}

/// The answers that made the quorum.
pub struct Answers<T> {
    /// Successful answers, in arrival order, by replica name.
    pub ok: Vec<(String, T)>,
    /// Replicas that failed before the quorum was reached.
    pub failed: Vec<ReplicaError>,
    /// Replica calls still running.
    pub pending: Pending<T>,
}

/// Runs `calls` until `required` of them succeed.
///
/// `already` counts successes obtained before the fan-out (the coordinator's
/// own local write), with their replica names, so the error reports the
/// whole picture.
pub async fn quorum<T: Send + 'static>(
    calls: Vec<Call<T>>,
    required: usize,
    already: Vec<String>,
    timeout: Duration,
) -> Result<Answers<T>> {
    quorum_of(
        calls,
        Vec::new(),
        vec![Need::Any(required)],
        already,
        timeout,
    )
    .await
}

/// What a quorum needs.
#[derive(Clone, Debug)]
pub enum Need {
    /// This many successes, from anyone.
    Any(usize),
    /// This many successes among the named replicas.
    Among(Vec<String>, usize),
}

impl Need {
    fn required(&self) -> usize {
        match self {
            Need::Any(r) | Need::Among(_, r) => *r,
        }
    }

    /// Successes among `names` that count for this need.
    fn count<'a>(&self, names: impl Iterator<Item = &'a String>) -> usize {
        match self {
            Need::Any(_) => names.count(),
            Need::Among(set, _) => names.filter(|n| set.contains(n)).count(),
        }
    }
}

/// Runs `calls` (named `labels`, in the same order; only needed for
/// [`Need::Among`]) until every need is met: a write while its partition
/// moves needs W of the old replicas and W of the new ones. Fails with
/// `Unavailable` as soon as a need cannot be met, `Timeout` at the
/// deadline; the error reports the first need still unmet.
pub async fn quorum_of<T: Send + 'static>(
    calls: Vec<Call<T>>,
    labels: Vec<String>,
    needs: Vec<Need>,
    already: Vec<String>,
    timeout: Duration,
) -> Result<Answers<T>> {
    let mut outstanding = labels;
    let mut pending: Pending<T> = calls.into_iter().collect();
    let mut answers = Answers {
        ok: Vec::new(),
        failed: Vec::new(),
        pending: FuturesUnordered::new(),
    };
    let acked = |answers: &Answers<T>| -> Vec<String> {
        already
            .iter()
            .cloned()
            .chain(answers.ok.iter().map(|(n, _)| n.clone()))
            .collect()
    };
    // The first need that the successes so far leave unmet.
    let unmet = |acked: &[String]| needs.iter().find(|n| n.count(acked.iter()) < n.required());
    // The first need that cannot be met even if every running call succeeds.
    let hopeless = |acked: &[String], outstanding: &[String], running: usize| {
        needs.iter().find(|n| {
            let possible = match n {
                Need::Any(_) => acked.len() + running,
                Need::Among(..) => n.count(acked.iter().chain(outstanding)),
            };
            possible < n.required()
        })
    };
    let unavailable = |need: &Need, acked: Vec<String>, failed| Error::Unavailable {
        needed: need.required(),
        got: need.count(acked.iter()),
        acked,
        failed,
    };
    if let Some(need) = hopeless(&already, &outstanding, pending.len()) {
        return Err(unavailable(need, already.clone(), Vec::new()));
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let so_far = acked(&answers);
        let Some(need) = unmet(&so_far) else { break };
        tokio::select! {
            next = pending.next() => {
                let Some((node, result)) = next else {
                    return Err(unavailable(need, so_far, answers.failed));
                };
                if let Some(i) = outstanding.iter().position(|l| *l == node) {
                    outstanding.swap_remove(i);
                }
                match result {
                    Ok(value) => answers.ok.push((node, value)),
                    Err(e) => {
                        answers.failed.push(ReplicaError { node, error: e.to_string() });
                        if let Some(need) = hopeless(&so_far, &outstanding, pending.len()) {
                            return Err(unavailable(need, so_far, answers.failed));
                        }
                    }
                }
            }
            _ = &mut deadline => {
                return Err(Error::Timeout {
                    needed: need.required(),
                    got: need.count(so_far.iter()),
                    acked: so_far,
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

    fn ok(node: &str, delay_ms: u64) -> Call<u32> {
        call(node.to_string(), async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok(1)
        })
    }

    fn fail(node: &str) -> Call<u32> {
        call(node.to_string(), async {
            Err(Error::Storage("disk".into()))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn returns_at_quorum_and_hands_back_the_rest() {
        let answers = quorum(
            vec![ok("a", 1), ok("b", 2), ok("c", 500)],
            2,
            vec![],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let names: Vec<_> = answers.ok.iter().map(|(n, _)| n.as_str()).collect();
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
            vec!["self".into()],
            Duration::from_secs(1),
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
        let old = Need::Among(vec!["self".into(), "a".into(), "b".into()], 2);
        let new = Need::Among(vec!["self".into(), "a".into(), "d".into()], 2);
        // "a" fails: the old set still has self + b, the new set self + d.
        let answers = quorum_of(
            vec![fail("a"), ok("b", 1), ok("d", 50)],
            vec!["a".into(), "b".into(), "d".into()],
            vec![old.clone(), new.clone()],
            vec!["self".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        let names: Vec<_> = answers.ok.iter().map(|(n, _)| n.as_str()).collect();
        // b alone met the old set's need; the call waited for d.
        assert_eq!(names, vec!["b", "d"]);
        // Without d the new set cannot reach 2, whatever the old set does.
        let err = quorum_of(
            vec![ok("a", 1), ok("b", 1), fail("d")],
            vec!["a".into(), "b".into(), "d".into()],
            vec![old, Need::Among(vec!["d".into(), "e".into()], 2)],
            vec!["self".into()],
            Duration::from_secs(1),
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
        let answers = quorum::<u32>(vec![], 1, vec!["self".into()], Duration::from_secs(1))
            .await
            .unwrap();
        assert!(answers.ok.is_empty());
        let err = quorum::<u32>(vec![], 2, vec!["self".into()], Duration::from_secs(1))
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
}
