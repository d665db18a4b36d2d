//! Layers, checked. Between crates Cargo refuses an import that points up
//! (a crate cannot name one it does not depend on); these tests add what
//! Cargo cannot see:
//!
//! * no crate below the gRPC edge names a gRPC or protobuf type, nor lists
//!   one in its manifest (the server crate and the client are the edge);
//! * inside this crate, each module imports only modules ranked below it
//!   in [`NODE_LAYERS`], so the node's subsystems stay a stack rather than
//!   a web.

use std::path::{Path, PathBuf};

/// The node's modules, lowest first: a module may import only the ones
/// before it. `assemble` puts a node together and may import everything.
const NODE_LAYERS: &[&str] = &[
    "worker",
    "config",
    "metrics",
    "replica",
    "membership",
    "handoff",
    "coordinator",
    "repair",
    "rebalance",
    "auth",
    "inbound",
    "assemble",
];

/// Crates below the edge (directories of the workspace).
const BELOW_THE_EDGE: &[&str] = &["common", "core", "storage", "peer", "node"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the node crate sits in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    if !dir.exists() {
        return files;
    }
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                files.push((path, text));
            }
        }
    }
    files
}

/// Lines of code (not comments) that contain any of `needles`.
fn offending(files: &[(PathBuf, String)], needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (path, text) in files {
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            if needles.iter().any(|needle| names(code, needle)) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, code));
            }
        }
    }
    found
}

/// Whether `code` names `word` (not as the tail of a longer name, so
/// `monotonic` is not `tonic`).
fn names(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn no_grpc_or_protobuf_below_the_edge() {
    let root = workspace();
    let mut files = Vec::new();
    for krate in BELOW_THE_EDGE {
        let dir = root.join(krate);
        files.extend(sources(&dir.join("src")));
        files.extend(
            sources(&dir.join("tests"))
                .into_iter()
                .filter(|(path, _)| !path.ends_with("layering.rs")),
        );
        let manifest = dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).expect("a manifest");
        files.push((manifest, text));
    }
    assert!(files.len() > 80, "found only {} files", files.len());
    let found = offending(
        &files,
        &[
            "tonic",
            "prost",
            "ringkv_proto",
            "ringkv-proto",
            "pb::",
            "ringkv_server",
            "ringkv-server",
        ],
    );
    assert!(
        found.is_empty(),
        "gRPC below the edge:\n{}",
        found.join("\n")
    );
}

/// The module of this crate that `path` (under `src/`) belongs to.
fn module_of(src: &Path, path: &Path) -> String {
    let first = path
        .strip_prefix(src)
        .expect("a file under src")
        .components()
        .next()
        .expect("a path component");
    let name = first.as_os_str().to_string_lossy();
    name.trim_end_matches(".rs").to_string()
}

/// The modules of this crate that `text` names through `crate::`.
fn imports(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Imports that point up or sideways-unknown in `files`, given `layers`.
fn upward(src: &Path, files: &[(PathBuf, String)], layers: &[&str]) -> Vec<String> {
    let rank = |m: &str| layers.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (path, text) in files {
        let module = module_of(src, path);
        if module == "lib" {
            continue;
        }
        let Some(mine) = rank(&module) else {
            wrong.push(format!("{}: module {module} has no layer", path.display()));
            continue;
        };
        for name in imports(text) {
            // `crate::Error` and `crate::Result` are re-exports of the core.
            if name == module || name == "Error" || name == "Result" {
                continue;
            }
            match rank(&name) {
                Some(theirs) if theirs < mine => {}
                _ => wrong.push(format!("{}: {module} imports {name}", path.display())),
            }
        }
    }
    wrong
}

#[test]
fn node_modules_import_only_lower_layers() {
    let src = workspace().join("node").join("src");
    let files = sources(&src);
    assert!(files.len() > 40, "found only {} files", files.len());
    let wrong = upward(&src, &files, NODE_LAYERS);
    assert!(
        wrong.is_empty(),
        "imports up the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_grpc_name_is_caught_and_a_lookalike_is_not() {
    let files = vec![(
        PathBuf::from("x.rs"),
        "let t = monotonic();\nfn f(s: tonic::Status) {}\n// tonic:: in a comment\n".to_string(),
    )];
    let found = offending(&files, &["tonic"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("tonic::Status"), "{found:?}");
}

#[test]
fn an_upward_import_is_caught() {
    // The checker itself: replica reaching up into membership fails.
    let src = Path::new("/src");
    let files = vec![(
        src.join("replica").join("mod.rs"),
        "use crate::metrics::Metrics;\nuse crate::membership::Cluster;\n".to_string(),
    )];
    let wrong = upward(src, &files, NODE_LAYERS);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].contains("replica imports membership"), "{wrong:?}");
}
