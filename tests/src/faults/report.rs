//! What a fault run did and found: the [`Report`], the ways the run broke
//! the contract ([`Report::problems`]) and its text form.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::{FaultKind, Ledger, Verdict, SEED_ENV};

/// Keys named in a report's problem lines; the rest are only counted.
const EXAMPLES: usize = 5;

/// What a run did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub seed: u64,
    pub ledger: Ledger,
    pub faults: BTreeMap<FaultKind, usize>,
    /// How long writes and faults ran.
    pub ran_for: Duration,
    /// From the last heal until no hints were pending.
    pub hints_drained_after: Option<Duration>,
    /// Partitions whose replicas differed once hints had drained.
    pub differing_after_hints: Option<usize>,
    /// From the last heal until all replicas agreed, by anti-entropy alone.
    pub converged_after: Option<Duration>,
    /// Why the cluster was not seen converging, if it was not.
    pub convergence_error: Option<String>,
    /// Keys the explicit repair on every node still found to exchange.
    pub repaired_by_explicit_repair: Option<u64>,
    pub repair_errors: Vec<String>,
    pub verdict: Verdict,
    /// Bound the run demanded for convergence.
    pub converge_within: Duration,
}

impl Report {
    /// Every way the run broke the contract; empty when it held.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let v = &self.verdict;
        let examples = |keys: &[String]| keys.iter().take(EXAMPLES).cloned().collect::<Vec<_>>();
        if !v.lost.is_empty() {
            out.push(format!(
                "{} acknowledged writes lost, e.g. {:?}",
                v.lost.len(),
                examples(&v.lost)
            ));
        }
        if !v.unreadable.is_empty() {
            out.push(format!(
                "{} acknowledged writes not returned by an R=ALL read, e.g. {:?}",
                v.unreadable.len(),
                examples(&v.unreadable)
            ));
        }
        if !v.under_replicated.is_empty() {
            let some: Vec<_> = v.under_replicated.iter().take(EXAMPLES).collect();
            out.push(format!(
                "{} (key, replica) pairs missing an acknowledged write, e.g. {some:?}",
                v.under_replicated.len()
            ));
        }
        if !v.refused_but_present.is_empty() {
            out.push(format!(
                "{} writes refused with UNAVAILABLE (nothing applied) are on some node, e.g. {:?}",
                v.refused_but_present.len(),
                examples(&v.refused_but_present)
            ));
        }
        if !v.extra_siblings.is_empty() {
            out.push(format!(
                "{} keys written once read back with several siblings, e.g. {:?}",
                v.extra_siblings.len(),
                examples(&v.extra_siblings)
            ));
        }
        match (&self.converged_after, &self.convergence_error) {
            (Some(t), _) if *t <= self.converge_within => {}
            (Some(t), _) => out.push(format!(
                "replicas agreed {t:?} after the last heal, beyond the bound {:?}",
                self.converge_within
            )),
            (None, e) => out.push(format!(
                "replicas were not seen agreeing: {}",
                e.as_deref().unwrap_or("unknown")
            )),
        }
        if !self.repair_errors.is_empty() {
            out.push(format!(
                "explicit repair reported errors: {:?}",
                &self.repair_errors[..self.repair_errors.len().min(EXAMPLES)]
            ));
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.ledger;
        let v = &self.verdict;
        writeln!(f, "seed           {} ({SEED_ENV}={})", self.seed, self.seed)?;
        writeln!(f, "ran for        {:.1?}", self.ran_for)?;
        writeln!(
            f,
            "writes         attempted {}, acknowledged {}, failed {} (refused {}), indeterminate {}",
            l.attempted,
            l.acknowledged.len(),
            l.failed,
            l.refused.len(),
            l.indeterminate
        )?;
        writeln!(f, "errors         {:?}", l.errors)?;
        writeln!(
            f,
            "faults         {} in all: {:?}",
            self.faults.values().sum::<usize>(),
            self.faults
        )?;
        writeln!(
            f,
            "hints drained  {:.1?} after the last heal",
            self.hints_drained_after
        )?;
        writeln!(
            f,
            "converged      {:.1?} after the last heal (bound {:?}); {:?} partitions differed once hints drained",
            self.converged_after, self.converge_within, self.differing_after_hints
        )?;
        if let Some(e) = &self.convergence_error {
            writeln!(f, "convergence    {e}")?;
        }
        writeln!(
            f,
            "explicit repair afterwards: {:?} keys repaired, {} errors",
            self.repaired_by_explicit_repair,
            self.repair_errors.len()
        )?;
        write!(
            f,
            "checked        lost {}, unreadable {}, under-replicated {}, extra siblings {}, refused but present {}",
            v.lost.len(),
            v.unreadable.len(),
            v.under_replicated.len(),
            v.extra_siblings.len(),
            v.refused_but_present.len()
        )
    }
}
