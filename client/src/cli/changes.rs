//! `ringkv cluster join | leave | remove | plan | commit | transfers`.
//!
//! Plans, commits and removals go to any node, which passes them to the
//! claimant; `join` goes to the fresh node itself (the first endpoint);
//! `transfers` asks every live member for the transfers it receives.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ringkv_client::{Client, Error};
use ringkv_proto::v1 as pb;
use serde_json::json;

/// How often `commit --wait` polls the cluster.
const POLL: Duration = Duration::from_millis(500);

/// Longest `commit --wait` waits for transfers before giving up.
const WAIT_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// Width of the progress bar, in characters.
const BAR: usize = 30;

/// The terminal bar's length: it shows a fraction, which we compute (bytes
/// against estimates, or partitions when nothing is estimated yet).
const BAR_STEPS: u64 = 1000;

/// The terminal bar: the same picture as [`progress_line`], drawn in place.
const BAR_TEMPLATE: &str = "[{bar:30}] {percent:>3}%  {msg}";

pub async fn join(
    client: &Client,
    seed: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let message = client.join(0, seed).await?;
    say(out, json, &message);
    Ok(())
}

pub async fn leave(
    client: &Client,
    node: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let message = client.leave(node).await?;
    say(out, json, &message);
    Ok(())
}

pub async fn remove(
    client: &Client,
    node: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let message = client.remove(node).await?;
    say(out, json, &message);
    Ok(())
}

fn say(out: &mut impl Write, json: bool, message: &str) {
    if json {
        let _ = writeln!(out, "{}", json!({ "ok": true, "message": message }));
    } else {
        let _ = writeln!(out, "{message}");
    }
}

/// Prints what committing would do; each partition move with `moves`.
pub async fn plan(
    client: &Client,
    moves: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let plan = client.plan().await?;
    if json {
        let _ = writeln!(out, "{}", plan_json(&plan));
    } else {
        print_plan(&plan, moves, out);
    }
    Ok(())
}

fn plan_json(plan: &pb::PlanResponse) -> serde_json::Value {
    json!({
        "current_version": plan.current_version,
        "next_version": plan.next_version,
        "changes": plan.changes,
        "moves": plan.moves.iter().map(|m| json!({
            "partition": m.partition, "from": m.from, "to": m.to,
            "estimated_bytes": m.estimated_bytes,
        })).collect::<Vec<_>>(),
        "move_count": plan.moves.len(),
        "minimum_moves": plan.minimum_moves,
        "estimated_bytes": plan.estimated_bytes,
        "members": plan.members.iter().map(|m| json!({
            "node_id": m.node_id, "name": m.name, "zone": m.zone, "weight": m.weight,
            "replicas_before": m.replicas_before, "replicas_after": m.replicas_after,
            "target_share": m.target_share, "change": m.change,
        })).collect::<Vec<_>>(),
        "blocked": plan.blocked,
    })
}

fn print_plan(plan: &pb::PlanResponse, moves: bool, out: &mut impl Write) {
    if plan.changes.is_empty() {
        let _ = writeln!(
            out,
            "layout v{}: nothing staged{}",
            plan.current_version,
            if plan.blocked.is_empty() || plan.blocked == "nothing is staged" {
                String::new()
            } else {
                format!(" ({})", plan.blocked)
            }
        );
        return;
    }
    let _ = writeln!(
        out,
        "staged changes against layout v{}:",
        plan.current_version
    );
    for c in &plan.changes {
        let _ = writeln!(out, "  {c}");
    }
    if !plan.blocked.is_empty() {
        let _ = writeln!(out, "cannot commit now: {}", plan.blocked);
        return;
    }
    let ratio = if plan.minimum_moves == 0 {
        1.0
    } else {
        plan.moves.len() as f64 / plan.minimum_moves as f64
    };
    let _ = writeln!(
        out,
        "layout v{} would copy {} partition replicas (minimum possible {}, {:.2}x), about {}",
        plan.next_version,
        plan.moves.len(),
        plan.minimum_moves,
        ratio,
        human_bytes(plan.estimated_bytes)
    );
    let _ = writeln!(
        out,
        "{:<18} {:<10} {:<10} {:>6} {:>8} {:>8} {:>8} {:>8}  CHANGE",
        "NODE", "NAME", "ZONE", "WEIGHT", "BEFORE", "AFTER", "TARGET", "DEVIATE"
    );
    for m in &plan.members {
        let deviation = if m.target_share > 0.0 {
            format!(
                "{:+.1}%",
                100.0 * (f64::from(m.replicas_after) - m.target_share) / m.target_share
            )
        } else {
            "-".to_string()
        };
        let _ = writeln!(
            out,
            "{:<18} {:<10} {:<10} {:>6} {:>8} {:>8} {:>8.1} {:>8}  {}",
            m.node_id,
            m.name,
            m.zone,
            m.weight,
            m.replicas_before,
            m.replicas_after,
            m.target_share,
            deviation,
            m.change
        );
    }
    if moves {
        let _ = writeln!(
            out,
            "{:>9}  {:<18} {:<18} {:>10}",
            "PARTITION", "FROM", "TO", "EST. BYTES"
        );
        for m in &plan.moves {
            let _ = writeln!(
                out,
                "{:>9}  {:<18} {:<18} {:>10}",
                m.partition,
                m.from,
                m.to,
                human_bytes(m.estimated_bytes)
            );
        }
    } else {
        let mut by_receiver: std::collections::BTreeMap<&str, (usize, u64)> = Default::default();
        for m in &plan.moves {
            let e = by_receiver.entry(m.to.as_str()).or_default();
            e.0 += 1;
            e.1 += m.estimated_bytes;
        }
        let _ = writeln!(
            out,
            "{:<18} {:>10} {:>10}",
            "RECEIVER", "PARTITIONS", "EST. BYTES"
        );
        for (to, (count, bytes)) in by_receiver {
            let _ = writeln!(out, "{to:<18} {count:>10} {:>10}", human_bytes(bytes));
        }
        let _ = writeln!(
            out,
            "(`ringkv cluster plan --moves` lists every partition move)"
        );
    }
    let _ = writeln!(
        out,
        "run `ringkv cluster commit` to apply (it re-plans against v{} and refuses if the layout changed)",
        plan.current_version
    );
}

/// Publishes the staged changes; with `wait`, follows the transfers until
/// the old replicas are retired.
pub async fn commit(
    client: &Client,
    wait: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let plan = client.plan().await?;
    if !plan.blocked.is_empty() {
        return Err(Error::FailedPrecondition(plan.blocked));
    }
    let committed = client.commit(plan.current_version).await?;
    if json && !wait {
        let _ = writeln!(
            out,
            "{}",
            json!({ "ok": true, "version": committed.version, "moves": committed.moves })
        );
        return Ok(());
    }
    if !json {
        let _ = writeln!(
            out,
            "committed layout v{}: {} partition replicas to copy",
            committed.version, committed.moves
        );
    }
    if !wait {
        return Ok(());
    }
    let started = Instant::now();
    let settled = if committed.moves == 0 {
        committed.version
    } else {
        follow(client, committed.version, json, out, started).await?
    };
    let elapsed = started.elapsed();
    if json {
        let _ = writeln!(
            out,
            "{}",
            json!({
                "ok": true, "version": committed.version, "moves": committed.moves,
                "settled_version": settled, "elapsed_ms": elapsed.as_millis() as u64,
            })
        );
    } else {
        let _ = writeln!(
            out,
            "layout v{settled} in force: transfers done, old replicas retired ({:.1}s)",
            elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// Polls until a layout newer than `version` and not in transition is in
/// force, drawing progress; returns that version.
async fn follow(
    client: &Client,
    version: u64,
    json: bool,
    out: &mut impl Write,
    started: Instant,
) -> Result<u64, Error> {
    let terminal = std::io::stdout().is_terminal();
    // On a terminal, indicatif redraws the line; elsewhere (a pipe, a log)
    // plain lines go to `out`, at most one a second.
    let bar = (terminal && !json).then(transfer_bar);
    let _ = out.flush();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        let layout = client.layout().await?;
        if layout.version > version && layout.previous_version == 0 {
            if let Some(bar) = bar {
                if bar.message().is_empty() {
                    bar.finish_and_clear(); // never drawn: no transfers seen
                } else {
                    // Leaves the last picture; the cursor is still on its line.
                    bar.finish();
                    let _ = writeln!(out);
                }
            }
            return Ok(layout.version);
        }
        if started.elapsed() > WAIT_LIMIT {
            return Err(Error::Timeout(format!(
                "transfers of layout v{version} still running after {WAIT_LIMIT:?}; follow them with `ringkv cluster transfers`"
            )));
        }
        let (transfers, rate) = of_version(&collect(client).await?, version);
        if let Some(bar) = &bar {
            if !transfers.is_empty() {
                let (fraction, figures) = summary(&transfers, rate);
                bar.set_position((fraction * BAR_STEPS as f64).round() as u64);
                bar.set_message(figures);
            }
        } else if !json && !transfers.is_empty() && last_line.elapsed() >= Duration::from_secs(1) {
            let _ = writeln!(out, "{}", progress_line(&transfers, rate));
            let _ = out.flush();
            last_line = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A bar drawn in place on stdout. It is drawn from this thread only (no
/// steady tick), which already holds stdout's lock: that lock is reentrant
/// on one thread, so the drawing cannot stall behind it.
fn transfer_bar() -> ProgressBar {
    let style = ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#.");
    ProgressBar::with_draw_target(Some(BAR_STEPS), ProgressDrawTarget::stdout()).with_style(style)
}

/// `[#####.....]  45%  12.3 MB of 27.1 MB  4.1 MB/s  ETA 3s  12/40 partitions`
/// (`rate`: bytes per second over all receiving nodes).
fn progress_line(transfers: &[pb::Transfer], rate: f64) -> String {
    let (fraction, figures) = summary(transfers, rate);
    let filled = ((fraction * BAR as f64).round() as usize).min(BAR);
    format!(
        "[{}{}] {:>3.0}%  {figures}",
        "#".repeat(filled),
        ".".repeat(BAR - filled),
        fraction * 100.0,
    )
}

/// How far the transfers are (0 to 1) and the figures after the bar:
/// `12.3 MB of 27.1 MB  4.1 MB/s  ETA 3s  12/40 partitions`.
fn summary(transfers: &[pb::Transfer], rate: f64) -> (f64, String) {
    let done_parts = transfers.iter().filter(|t| t.state == "done").count();
    let bytes: u64 = transfers.iter().map(|t| t.bytes).sum();
    let total: u64 = transfers
        .iter()
        .map(|t| t.estimated_bytes.max(t.bytes))
        .sum();
    let fraction = if transfers.is_empty() {
        0.0
    } else if total == 0 {
        done_parts as f64 / transfers.len() as f64
    } else {
        (bytes as f64 / total as f64).min(1.0)
    };
    let eta = if rate > 0.0 && total > bytes {
        format!("ETA {:.0}s", (total - bytes) as f64 / rate)
    } else {
        "ETA -".to_string()
    };
    let figures = format!(
        "{} of {}  {}/s  {}  {}/{} partitions",
        human_bytes(bytes),
        human_bytes(total),
        human_bytes(rate as u64),
        eta,
        done_parts,
        transfers.len()
    );
    (fraction, figures)
}

/// Every live member's transfer report, with its name.
async fn collect(client: &Client) -> Result<Vec<(String, pb::TransfersResponse)>, Error> {
    let mut all = Vec::new();
    for m in client.members().await? {
        if m.liveness != "alive" {
            continue;
        }
        if let Ok(t) = client.transfers_at(&m.address).await {
            all.push((m.name, t));
        }
    }
    Ok(all)
}

/// The transfers of layout `version` over all reports, and the summed
/// node rates.
fn of_version(
    reports: &[(String, pb::TransfersResponse)],
    version: u64,
) -> (Vec<pb::Transfer>, f64) {
    let mut list = Vec::new();
    let mut rate = 0.0;
    for (_, r) in reports {
        if r.layout_version == version {
            rate += r.rate;
        }
        list.extend(
            r.transfers
                .iter()
                .filter(|t| t.layout_version == version)
                .cloned(),
        );
    }
    (list, rate)
}

/// Prints the current change's progress per receiving node and its
/// unfinished transfers (every transfer with `all`).
pub async fn transfers(
    client: &Client,
    all: bool,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Error> {
    let layout = client.layout().await?;
    let reports = collect(client).await?;
    let (current, rate) = of_version(&reports, layout.version);
    if json {
        let items: Vec<_> = reports
            .iter()
            .flat_map(|(_, r)| r.transfers.iter())
            .map(|t| {
                json!({
                    "partition": t.partition, "from": t.from, "to": t.to,
                    "layout_version": t.layout_version, "bytes": t.bytes, "keys": t.keys,
                    "resumed_from_bytes": t.resumed_from_bytes,
                    "estimated_bytes": t.estimated_bytes, "rate": t.rate, "eta_ms": t.eta_ms,
                    "state": t.state, "last_error": t.last_error, "elapsed_ms": t.elapsed_ms,
                })
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            json!({
                "layout_version": layout.version,
                "in_transition": layout.previous_version != 0,
                "rate": rate,
                "transfers": items,
            })
        );
        return Ok(());
    }
    if layout.previous_version == 0 {
        let _ = writeln!(out, "layout v{}: no change in progress", layout.version);
    } else {
        let _ = writeln!(
            out,
            "layout v{} replacing v{}: {}",
            layout.version,
            layout.previous_version,
            progress_line(&current, rate)
        );
    }
    let receiving: Vec<_> = reports
        .iter()
        .filter(|(_, r)| {
            r.transfers
                .iter()
                .any(|t| t.layout_version == layout.version)
        })
        .collect();
    if !receiving.is_empty() {
        let _ = writeln!(
            out,
            "{:<10} {:<18} {:>11} {:>10} {:>10}",
            "RECEIVER", "NODE", "PARTITIONS", "BYTES", "RATE"
        );
        for (name, r) in &receiving {
            let mine: Vec<_> = r
                .transfers
                .iter()
                .filter(|t| t.layout_version == layout.version)
                .collect();
            let done = mine.iter().filter(|t| t.state == "done").count();
            let _ = writeln!(
                out,
                "{:<10} {:<18} {:>5}/{:<5} {:>10} {:>8}/s",
                name,
                mine.first().map(|t| t.to.as_str()).unwrap_or(""),
                done,
                mine.len(),
                human_bytes(mine.iter().map(|t| t.bytes).sum()),
                human_bytes(r.rate as u64),
            );
        }
    }
    let shown: Vec<&pb::Transfer> = current
        .iter()
        .filter(|t| all || (t.state != "done" && t.state != "queued"))
        .collect();
    let queued = current.iter().filter(|t| t.state == "queued").count();
    if !all && queued > 0 {
        let _ = writeln!(
            out,
            "{queued} partitions queued (`--all` lists every transfer, finished and queued ones too)"
        );
    }
    if shown.is_empty() {
        return Ok(());
    }
    let _ = writeln!(
        out,
        "{:>9}  {:<18} {:<18} {:<9} {:>10} {:>8} {:>10} {:>7} {:>10}",
        "PARTITION", "FROM", "TO", "STATE", "BYTES", "KEYS", "RATE", "ETA", "RESUMED AT"
    );
    for t in shown {
        let eta = if t.eta_ms > 0 {
            format!("{:.0}s", t.eta_ms as f64 / 1000.0)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:>9}  {:<18} {:<18} {:<9} {:>10} {:>8} {:>8}/s {:>7} {:>10}",
            t.partition,
            t.from,
            t.to,
            t.state,
            human_bytes(t.bytes),
            t.keys,
            human_bytes(t.rate as u64),
            eta,
            human_bytes(t.resumed_from_bytes),
        );
        if !t.last_error.is_empty() && t.state != "done" {
            let _ = writeln!(out, "           last error: {}", t.last_error);
        }
    }
    Ok(())
}

/// 1234567 -> "1.2 MB" (powers of 1000, as `transfer.max_rate`).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_like_rates() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_250_000), "1.2 MB");
        assert_eq!(human_bytes(3_000_000_000), "3.0 GB");
    }

    #[test]
    fn the_bar_fills_with_bytes() {
        let t = |bytes, est, state: &str| pb::Transfer {
            bytes,
            estimated_bytes: est,
            state: state.into(),
            rate: 1000.0,
            ..Default::default()
        };
        let line = progress_line(&[t(500, 1000, "streaming"), t(1000, 1000, "done")], 1000.0);
        assert!(
            line.starts_with(&format!("[{}{}]", "#".repeat(23), ".".repeat(7))),
            "{line}"
        );
        assert!(
            line.contains("75%") && line.contains("1/2 partitions"),
            "{line}"
        );
        assert!(progress_line(&[], 0.0).contains("0/0 partitions"));
    }

    #[test]
    fn the_terminal_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }
}
