//! Unit tests of the command line's validation into a [`Config`]: the
//! workloads' mixes, the rejected settings, smoke mode, and how levels
//! appear in the report.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
}

fn config(args: &[&str]) -> Result<Config> {
    let argv = std::iter::once("ringkv-bench").chain(args.iter().copied());
    Config::from_args(Cli::try_parse_from(argv)?.run)
}

#[test]
fn workloads_set_the_mix() {
    assert_eq!(config(&[]).unwrap().read_ratio, DEFAULT_READ_RATIO);
    assert_eq!(config(&["--workload", "a"]).unwrap().mix, Mix::reads(0.5));
    assert_eq!(config(&["--workload", "b"]).unwrap().read_ratio, 0.95);
    assert_eq!(config(&["--workload", "c"]).unwrap().mix.update, 0.0);
    let f = config(&["--workload", "f"]).unwrap().mix;
    assert_eq!((f.read, f.read_modify_write, f.update), (0.5, 0.5, 0.0));
    let load = config(&["--workload", "load"]).unwrap();
    assert_eq!(load.mix.insert, 1.0);
    assert_eq!(load.warmup, Duration::ZERO);
    assert_eq!(config(&["--read-ratio", "0.25"]).unwrap().read_ratio, 0.25);
    assert!(config(&["--read-ratio", "0.2", "--workload", "c"]).is_err());
}

#[test]
fn the_mix_picks_each_operation_by_its_share() {
    let f = Workload::F.mix();
    assert_eq!(f.pick(0.0), Op::Read);
    assert_eq!(f.pick(0.49), Op::Read);
    assert_eq!(f.pick(0.5), Op::ReadModifyWrite);
    assert_eq!(f.pick(0.999_999), Op::ReadModifyWrite);
    assert_eq!(Workload::C.mix().pick(0.999_999), Op::Read);
    assert_eq!(Workload::Load.mix().pick(0.3), Op::Insert);
    assert_eq!(Mix::reads(0.0).pick(0.0), Op::Update);
}

#[test]
fn out_of_range_settings_are_rejected() {
    for bad in [
        &["--read-ratio", "1.5"][..],
        &["--read-ratio", "NaN"],
        &["--concurrency", "0"],
        &["--keys", "0"],
        &["--value-size", "0"],
        &["--duration", "0s"],
        &["--duration", "2days"],
        &["--max-ops", "0"],
        &["-w", "zero"],
        &["--zipf-theta", "1"],
        &["--zipf-theta", "0"],
        &["--target-rate", "0"],
        &["--target-rate", "-5"],
        &["--workload", "load", "--warmup", "2s"],
        &["--workload", "load", "--preload"],
        &["--workload", "load", "--keys", "10", "--insert-from", "10"],
        &["--workload", "load", "--keys", "10", "--insert-from", "11"],
        &["--workload", "a", "--insert-from", "5"],
        &["--insert-from", "5"],
        &["--target", "etcd", "-w", "all"],
        &["--data-dir", "/tmp/x"],
    ] {
        assert!(config(bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn insert_from_starts_the_load_part_way() {
    let c = config(&["--workload", "load", "--keys", "10", "--insert-from", "9"]).unwrap();
    assert_eq!((c.insert_from, c.keys), (9, 10));
    assert_eq!(serde_json::to_value(&c).unwrap()["insert_from"], 9);
    assert_eq!(config(&["--workload", "load"]).unwrap().insert_from, 0);
    let err = config(&["--workload", "load", "--keys", "10", "--insert-from", "10"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be below --keys (10)"), "{err}");
}

#[test]
fn smoke_mode_is_short_and_preloaded() {
    let c = config(&[
        "--smoke",
        "--duration",
        "1h",
        "--keys",
        "5",
        "--concurrency",
        "64",
    ])
    .unwrap();
    assert_eq!(c.duration, SMOKE_DURATION);
    assert_eq!(c.warmup, Duration::ZERO);
    assert_eq!(c.keys, SMOKE_KEYS);
    assert_eq!(c.concurrency, SMOKE_CONCURRENCY);
    assert_eq!(c.max_ops, Some(SMOKE_MAX_OPS));
    assert!(c.preload);
    // The load workload is its own preload.
    assert!(!config(&["--smoke", "--workload", "load"]).unwrap().preload);
}

#[test]
fn levels_appear_as_typed() {
    let c = config(&["-r", "ALL", "-w", "2"]).unwrap();
    assert_eq!(c.read_level, Some(Level::All));
    assert_eq!(c.write_level, Some(Level::Count(2)));
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["read_level"], "all");
    assert_eq!(json["write_level"], "2");
    assert_eq!(
        serde_json::to_value(config(&[]).unwrap()).unwrap()["read_level"],
        "default"
    );
}
