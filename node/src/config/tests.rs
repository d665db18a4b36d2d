//! Configuration: defaults, validation, loading and printing.

use super::*;
use std::io::Write;

#[test]
fn defaults_are_valid_and_match_the_design() {
    let c = Config::load(None, &[]).unwrap();
    assert_eq!(c.node.listen.to_string(), "127.0.0.1:7379");
    assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9379");
    assert_eq!(c.cluster.replication, 3);
    assert_eq!(c.cluster.partitions, 256);
    assert_eq!(c.cluster.read, Level::Quorum);
    assert_eq!(c.limits.max_key_bytes, 4096);
    assert_eq!(c.limits.max_value_bytes, 1 << 20);
    assert_eq!(c.storage.sync, SyncMode::Periodic);
}

#[test]
fn key_state_limit_holds_one_largest_value_not_two_and_fits_a_message() {
    let l = LimitsConfig::default();
    assert!(l.max_key_state_bytes >= l.max_value_bytes + KEY_STATE_HEADROOM_BYTES);
    assert!(
        l.max_key_state_bytes < 2 * l.max_value_bytes,
        "two values of the largest size must not fit one key by default"
    );
    // A key and its whole state, plus framing, fit one message; a
    // client's put (key, value, context) too.
    assert!(
        l.max_message_bytes() >= l.max_key_state_bytes + l.max_key_bytes + MESSAGE_OVERHEAD_BYTES
    );
    assert!(l.max_message_bytes() >= l.max_value_bytes + l.max_key_bytes + MESSAGE_OVERHEAD_BYTES);
    assert_eq!(l.max_item_bytes(), l.max_key_state_bytes + l.max_key_bytes);
    // The message limit follows the state limit when it is raised.
    let raised = LimitsConfig {
        max_key_state_bytes: 8 << 20,
        ..LimitsConfig::default()
    };
    assert_eq!(
        raised.max_message_bytes(),
        (8 << 20) + raised.max_key_bytes + MESSAGE_OVERHEAD_BYTES
    );
}

#[test]
fn key_state_limit_is_validated_against_the_value_limit() {
    let too_small = vec![(
        "limits.max_key_state_bytes".to_string(),
        (1024 * 1024).to_string(),
    )];
    let err = Config::load(None, &too_small).unwrap_err().to_string();
    assert!(err.contains("max_key_state_bytes"), "{err}");
    assert!(err.contains("max_value_bytes"), "{err}");

    let bigger_values = vec![("limits.max_value_bytes".to_string(), (4 << 20).to_string())];
    let err = Config::load(None, &bigger_values).unwrap_err().to_string();
    assert!(err.contains("raise it together"), "{err}");

    let both = vec![
        ("limits.max_value_bytes".to_string(), (4 << 20).to_string()),
        (
            "limits.max_key_state_bytes".to_string(),
            (5 << 20).to_string(),
        ),
    ];
    let c = Config::load(None, &both).unwrap();
    assert!(c.limits.max_message_bytes() > 5 << 20);

    let too_big = vec![(
        "limits.max_key_state_bytes".to_string(),
        (MAX_KEY_STATE_LIMIT + 1).to_string(),
    )];
    assert!(Config::load(None, &too_big).is_err());
}

#[test]
fn file_then_overrides_layer_in_order() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[node]\nname = \"from-file\"\nlisten = \"127.0.0.1:7400\"\n[cluster]\nwrite = \"all\"\nread = 2"
    )
    .unwrap();
    let overrides = vec![("node.name".to_string(), "from-flag".to_string())];
    let c = Config::load(Some(file.path()), &overrides).unwrap();
    assert_eq!(c.node.name, "from-flag");
    assert_eq!(c.node.listen.to_string(), "127.0.0.1:7400");
    assert_eq!(c.cluster.write, Level::All);
    assert_eq!(c.cluster.read, Level::Count(2));
}

#[test]
fn unknown_keys_and_bad_values_are_errors() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[node]\nlisen = \"127.0.0.1:7400\"").unwrap();
    let err = Config::load(Some(file.path()), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("lisen"), "{err}");

    let bad = vec![("cluster.partitions".to_string(), "100".to_string())];
    let err = Config::load(None, &bad).unwrap_err().to_string();
    assert!(err.contains("power of two"), "{err}");

    let bad = vec![("cluster.write".to_string(), "7".to_string())];
    assert!(Config::load(None, &bad).is_err());

    let missing = Path::new("/nonexistent/ringkv.toml");
    assert!(Config::load(Some(missing), &[]).is_err());
}

#[test]
fn printed_config_loads_back_identically() {
    let c = Config::load(None, &[]).unwrap();
    let text = c.to_toml().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let again = Config::load(Some(file.path()), &[]).unwrap();
    assert_eq!(again.to_toml().unwrap(), text);
}

/// Every `debug.inject_bug` value, with its spelling in configuration.
const BUGS: [(&str, InjectBug); 5] = [
    ("none", InjectBug::None),
    ("lose_every_tenth_write", InjectBug::LoseEveryTenthWrite),
    (
        "merge_collapses_siblings",
        InjectBug::MergeCollapsesSiblings,
    ),
    ("read_from_one_replica", InjectBug::ReadFromOneReplica),
    (
        "purge_ignores_one_replica",
        InjectBug::PurgeIgnoresOneReplica,
    ),
];

#[test]
fn an_injected_bug_is_refused_without_fault_injection() {
    assert_eq!(
        Config::load(None, &[]).unwrap().debug.inject_bug,
        InjectBug::None
    );
    for (name, bug) in BUGS {
        assert_eq!(bug.name(), name);
        let only_bug = vec![("debug.inject_bug".to_string(), name.to_string())];
        let with_faults = vec![
            ("debug.inject_bug".to_string(), name.to_string()),
            ("debug.fault_injection".to_string(), "true".to_string()),
        ];
        let allowed = Config::load(None, &with_faults).unwrap();
        assert_eq!(allowed.debug.inject_bug, bug);
        let without_faults = Config::load(None, &only_bug);
        if bug == InjectBug::None {
            assert!(without_faults.is_ok());
            continue;
        }
        let e = without_faults.unwrap_err().to_string();
        assert!(e.contains("debug.fault_injection = true"), "{e}");
        assert!(e.contains(name), "{e}");
    }
    let unknown = vec![
        (
            "debug.inject_bug".to_string(),
            "lose_everything".to_string(),
        ),
        ("debug.fault_injection".to_string(), "true".to_string()),
    ];
    assert!(Config::load(None, &unknown).is_err());
}

#[test]
fn an_injected_bug_loads_from_a_file_and_is_printed() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        file,
        "[debug]\nfault_injection = true\ninject_bug = \"merge_collapses_siblings\""
    )
    .unwrap();
    let c = Config::load(Some(file.path()), &[]).unwrap();
    assert_eq!(c.debug.inject_bug, InjectBug::MergeCollapsesSiblings);
    // `--print-config` prints it, and what it prints loads back.
    let text = c.to_toml().unwrap();
    assert!(
        text.contains("inject_bug = \"merge_collapses_siblings\""),
        "{text}"
    );
    let mut again = tempfile::NamedTempFile::new().unwrap();
    again.write_all(text.as_bytes()).unwrap();
    let reloaded = Config::load(Some(again.path()), &[]).unwrap();
    assert_eq!(reloaded.debug.inject_bug, InjectBug::MergeCollapsesSiblings);
    let default = Config::load(None, &[]).unwrap().to_toml().unwrap();
    assert!(default.contains("inject_bug = \"none\""), "{default}");
}

fn load(pairs: &[(&str, &str)]) -> Result<Config> {
    let overrides: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(None, &overrides)
}

fn refused(pairs: &[(&str, &str)], expected: &str) {
    let e = load(pairs).unwrap_err().to_string();
    assert!(e.contains(expected), "{pairs:?}: {e}");
}

#[test]
fn security_settings_come_in_whole_sets_and_leave_no_door_open() {
    let peer = [
        ("tls.peer_ca", "/ca.crt"),
        ("tls.peer_cert", "/n.crt"),
        ("tls.peer_key", "/n.key"),
    ];
    let with_peer = |more: &[(&'static str, &'static str)]| {
        let mut all = peer.to_vec();
        all.extend_from_slice(more);
        all
    };
    // Files are read at start, not here: a whole set validates.
    let c = load(&with_peer(&[("tls.cert", "/c.crt"), ("tls.key", "/c.key")])).unwrap();
    assert!(c.tls.client_port_tls() && c.tls.peer_tls());
    refused(
        &[("tls.cert", "/c.crt")],
        "tls.cert and tls.key go together",
    );
    refused(&[("tls.client_ca", "/ca.crt")], "tls.client_ca needs TLS");
    refused(&peer[..2], "go together");
    refused(
        &with_peer(&[("node.name", "not a name")]),
        "must be a DNS name",
    );

    let auth = [("auth.enabled", "true"), ("auth.root_token_file", "/root")];
    // Auth needs mutual TLS on the peer port, loopback or not.
    refused(&auth, "mutual TLS");
    refused(
        &with_peer(&[("auth.enabled", "true")]),
        "auth.root_token_file",
    );
    let mut with_faults = with_peer(&auth);
    with_faults.push(("debug.fault_injection", "true"));
    refused(&with_faults, "exclude each other");
    let mut secured = with_peer(&auth);
    secured.push(("node.peer_listen", "0.0.0.0:7380"));
    assert!(load(&secured).is_ok());
}
