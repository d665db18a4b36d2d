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
    let needed_total = required;
    let required = required.saturating_sub(already.len());
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
    if pending.len() < required {
        return Err(Error::Unavailable {
            needed: needed_total,
            got: already.len() + pending.len(),
            acked: already.clone(),
            failed: Vec::new(),
        });
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    while answers.ok.len() < required {
        tokio::select! {
            next = pending.next() => {
                let Some((node, result)) = next else { break };
                match result {
                    Ok(value) => answers.ok.push((node, value)),
                    Err(e) => {
                        answers.failed.push(ReplicaError { node, error: e.to_string() });
                        if answers.ok.len() + pending.len() < required {
                            return Err(Error::Unavailable {
                                needed: needed_total,
                                got: already.len() + answers.ok.len(),
                                acked: acked(&answers),
                                failed: answers.failed,
                            });
                        }
                    }
                }
            }
            _ = &mut deadline => {
                return Err(Error::Timeout {
                    needed: needed_total,
                    got: already.len() + answers.ok.len(),
                    acked: acked(&answers),
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
