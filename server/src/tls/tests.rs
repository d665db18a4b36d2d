use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::*;
use crate::certs::{self, Authority, Leaf, Usage};

fn config(dir: &Path, node: &str) -> TlsConfig {
    let f = |name: String| Some(dir.join(name));
    TlsConfig {
        cert: f(format!("{node}.crt")),
        key: f(format!("{node}.key")),
        client_ca: None,
        peer_ca: f("peer-ca.crt".into()),
        peer_cert: f(format!("{node}-peer.crt")),
        peer_key: f(format!("{node}-peer.key")),
        reload_check_ms: 0,
    }
}

fn err(result: Result<Option<Arc<Tls>>>) -> String {
    match result {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn good_files_load_and_serve_both_ports() {
    let dir = tempfile::tempdir().unwrap();
    certs::make_local(dir.path(), &["n1".to_string()], &[], &[]).unwrap();
    let tls = Tls::load(&config(dir.path(), "n1"), "n1").unwrap().unwrap();
    assert!(tls.acceptor(Port::Client).is_some());
    assert!(tls.acceptor(Port::Peer).is_some());
    assert!(tls.connector().is_some());
    assert_eq!(tls.files().len(), 5);
    assert!(Tls::load(&TlsConfig::default(), "n1").unwrap().is_none());
}

#[test]
fn unusable_files_are_refused_saying_which_and_why() {
    let dir = tempfile::tempdir().unwrap();
    certs::make_local(dir.path(), &["n1".to_string()], &[], &[]).unwrap();
    // The peer certificate names n1, not n2.
    let e = err(Tls::load(&config(dir.path(), "n1"), "n2"));
    assert!(e.contains("tls.peer_cert") && e.contains("\"n2\""), "{e}");

    let ca = Authority::open_or_create(dir.path(), "ca").unwrap();
    let now = OffsetDateTime::now_utc();
    let day = Duration::days(1);
    let sans = ["localhost".to_string()];
    ca.issue(&Leaf::new("n1", &sans, Usage::Server).valid(now - 9 * day, now - day))
        .unwrap()
        .write(dir.path(), "n1")
        .unwrap();
    let e = err(Tls::load(&config(dir.path(), "n1"), "n1"));
    assert!(e.contains("tls.cert") && e.contains("expired"), "{e}");
    ca.issue(&Leaf::new("n1", &sans, Usage::Server).valid(now + day, now + 9 * day))
        .unwrap()
        .write(dir.path(), "n1")
        .unwrap();
    let e = err(Tls::load(&config(dir.path(), "n1"), "n1"));
    assert!(e.contains("not valid before"), "{e}");

    std::fs::write(dir.path().join("n1.crt"), "not a certificate").unwrap();
    let e = err(Tls::load(&config(dir.path(), "n1"), "n1"));
    assert!(e.contains("tls.cert"), "{e}");
    std::fs::remove_file(dir.path().join("peer-ca.crt")).unwrap();
    let mut c = config(dir.path(), "n1");
    c.cert = None;
    c.key = None;
    let e = err(Tls::load(&c, "n1"));
    assert!(e.contains("tls.peer_ca"), "{e}");
}

#[test]
fn a_failed_reload_keeps_the_files_in_use() {
    let dir = tempfile::tempdir().unwrap();
    certs::make_local(dir.path(), &["n1".to_string()], &[], &[]).unwrap();
    let tls = Tls::load(&config(dir.path(), "n1"), "n1").unwrap().unwrap();
    tls.reload().unwrap();
    let before = Watched::of(&tls.files());
    std::fs::write(dir.path().join("n1.key"), "garbage").unwrap();
    assert_ne!(
        Watched::of(&tls.files()),
        before,
        "a changed file is noticed"
    );
    assert!(tls.reload().is_err());
    assert!(tls.acceptor(Port::Client).is_some(), "still serving");
}
