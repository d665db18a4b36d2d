#!/usr/bin/env python3
"""Markdown tables of a benches/growth.sh run.

Usage: benches/growth_tables.py RESULTS_DIR

Reads RESULTS_DIR/info.json and RESULTS_DIR/rows.jsonl (one line per
measured phase and per data-directory measurement, in run order) and the
ringkv-bench reports and RSS samples they name; prints one table per part
that ran. Latencies in ms, RSS in MiB (2^20 bytes), throughput in MB/s
(10^6 bytes) of values carried.
"""

import json
import os
import sys

MIB = 1 << 20


def load(path):
    with open(path) as f:
        return json.load(f)


def rss_samples(path):
    """(VmRSS, VmHWM) pairs in KiB; the last is read when the phase ended."""
    samples = []
    if os.path.exists(path):
        for line in open(path):
            fields = line.split()
            if len(fields) == 2:
                samples.append((int(fields[0]), int(fields[1])))
    return samples


def ms(us):
    return f"{us / 1000:.2f}"


def p50_p99(report, op):
    lat = report[op]["latency_us"]
    return f"{ms(lat['p50'])} / {ms(lat['p99'])}" if lat else "–"


def mib(kib):
    return f"{kib * 1024 / MIB:.0f}"


def rss_cell(paths):
    samples = [s for p in paths for s in rss_samples(p)]
    if not samples:
        return "–"
    peak = max(r for r, _ in samples)
    end, hwm = samples[-1]
    return f"{mib(peak)} / {mib(end)} ({mib(hwm)})"


def groups(rows, part):
    """label -> {"load"|"c"|"a": phase row, "live"|"flushed": disk row}, in run order."""
    out = {}
    for row in rows:
        if row["part"] != part:
            continue
        group = out.setdefault(row["label"], {})
        key = row["phase"] if row["kind"] == "phase" else row["when"]
        group[key] = row
    return out


def table(info, rows, part):
    value_part = part == "values"
    header = [
        "value B" if value_part else "keys",
        "load ops/s" + (" (MB/s)" if value_part else " (keys inserted, s)"),
        "C ops/s" + (" (MB/s)" if value_part else ""),
        "C read p50 / p99 ms",
        "A ops/s" + (" (MB/s)" if value_part else ""),
        "A read p50 / p99 ms",
        "A write p50 / p99 ms",
        "payload B/key",
        "disk B/key: flushed / SST / live",
        "RSS load: peak / end (HWM)",
        "RSS C+A: peak / end (HWM)",
        "errors",
        "load avg 1m",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    keys_present = 0
    for label, g in groups(rows, part).items():
        if not all(k in g for k in ("load", "c", "a", "flushed", "live")):
            lines.append(f"| {label} | (incomplete: {', '.join(sorted(g))}) |")
            continue
        reports = {k: load(g[k]["report"]) for k in ("load", "c", "a")}
        value = reports["load"]["config"]["value_size"]
        inserts = reports["load"]["inserts"]
        # Each value size has a node of its own; the key steps share one.
        keys_present = inserts["ops"] + (0 if value_part else keys_present)
        errors = sum(r["errors"] + r["cut_off"] for r in reports.values())
        not_found = sum(reports[k]["reads"]["not_found"] for k in ("c", "a"))

        def rate(report, op=None):
            per_sec = report[op]["ops_per_sec"] if op else report["ops_per_sec"]
            cell = f"{per_sec:,.0f}"
            if value_part:
                cell += f" ({per_sec * value / 1e6:.1f})"
            return cell

        load_cell = rate(reports["load"], "inserts")
        if not value_part:
            load_cell += f" ({inserts['ops']:,}, {reports['load']['elapsed_s']:.1f})"
        per_key = lambda d, kind="du_sb": f"{d[kind] / keys_present:,.0f}" if keys_present else "–"
        loads = [g[k][f"load_1m_{e}"] for k in ("load", "c", "a") for e in ("start", "end")]
        lines.append("| " + " | ".join([
            f"{int(label):,}",
            load_cell,
            rate(reports["c"]),
            p50_p99(reports["c"], "reads"),
            rate(reports["a"]),
            p50_p99(reports["a"], "reads"),
            p50_p99(reports["a"], "writes"),
            f"{info['key_bytes'] + value:,}",
            f"{per_key(g['flushed'])} / {per_key(g['flushed'], 'sst')} / {per_key(g['live'])}",
            rss_cell([g["load"]["rss"]]),
            rss_cell([g["c"]["rss"], g["a"]["rss"]]),
            str(errors) + (f"; {not_found:,} not found" if not_found else ""),
            f"{min(loads):.1f}–{max(loads):.1f}",
        ]) + " |")
    return "\n".join(lines)


def main():
    results = sys.argv[1]
    info = load(os.path.join(results, "info.json"))
    rows = [json.loads(line) for line in open(os.path.join(results, "rows.jsonl"))]
    ended = max((r["utc_end"] for r in rows if r["kind"] == "phase"), default="?")
    print(f"commit {info['commit'][:12]}{' (dirty)' if info['dirty'] else ''}, "
          f"{info['utc_start']} to {ended}, {info['nproc']} CPUs")
    for part in ("values", "keys"):
        if any(r["part"] == part for r in rows):
            print()
            print(f"### {part}")
            print()
            print(table(info, rows, part))


if __name__ == "__main__":
    main()
