//! The server's modules keep to their layers: gRPC and protobuf types stay
//! at the edge (`api`, `transport`, `server`, `main.rs`), where requests
//! arrive and leave; nothing below the edge names them or imports the
//! edge. The node's subsystems speak the peer layer's types only.

use std::path::{Path, PathBuf};

/// Top-level modules (directories or files of `src/`) that make the edge.
const EDGE: &[&str] = &["api", "transport", "server", "main.rs"];

/// Every source file below the edge, with its text.
fn below_the_edge() -> Vec<(PathBuf, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("a directory entry").path();
            let top = path
                .strip_prefix(&src)
                .ok()
                .and_then(|p| p.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            if EDGE.contains(&top.as_str()) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                files.push((path, text));
            }
        }
    }
    assert!(files.len() > 50, "found only {} files", files.len());
    files
}

/// Lines of code (not comments) of `text` that contain any of `needles`.
fn offending(files: &[(PathBuf, String)], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if needles.iter().any(|needle| code.contains(needle)) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, code));
            }
        }
    }
    found
}

#[test]
fn no_grpc_or_protobuf_type_below_the_edge() {
    let found = offending(
        &below_the_edge(),
        &["tonic::", "use tonic", "ringkv_proto", "pb::"],
    );
    assert!(
        found.is_empty(),
        "gRPC below the edge:\n{}",
        found.join("\n")
    );
}

#[test]
fn nothing_below_the_edge_imports_it() {
    let found = offending(
        &below_the_edge(),
        &["crate::api", "crate::transport", "crate::server"],
    );
    assert!(
        found.is_empty(),
        "imports of the edge:\n{}",
        found.join("\n")
    );
}
