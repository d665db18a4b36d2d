//! Disk faults on a node's own filesystem: a lost WAL tail, a data
//! directory restored from an older copy, a full disk.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::net::run;
use crate::node::Node;

/// The file that fills a node's filesystem.
const FILLER: &str = "zz-disk-filler";

/// The newest write-ahead log file under `dir`: RocksDB numbers its
/// files, and the live log has the highest number of the `.log` files.
fn newest_wal(dir: &Path) -> Result<Option<PathBuf>> {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let number = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(number) = number {
                if best.as_ref().is_none_or(|(b, _)| number > *b) {
                    best = Some((number, path));
                }
            }
        }
    }
    Ok(best.map(|(_, p)| p))
}

/// SIGKILL, then the newest WAL file loses its last `bytes` (all of it if
/// shorter), then a restart: the writes the node had not synced are gone,
/// as after a power loss under `storage.sync = periodic`.
pub async fn lose_wal_tail(node: &mut Node, bytes: u64) -> Result<()> {
    node.kill();
    if let Some(wal) = newest_wal(&node.data_dir)? {
        let len = std::fs::metadata(&wal)?.len();
        let file = OpenOptions::new().write(true).open(&wal)?;
        file.set_len(len.saturating_sub(bytes))
            .with_context(|| format!("truncating {}", wal.display()))?;
        file.sync_all()?;
    }
    node.start().await
}

/// Copies the node's data directory aside while the node is paused (a
/// crash-consistent copy, as a filesystem snapshot takes); returns where.
pub async fn snapshot(node: &Node, run_dir: &Path) -> Result<PathBuf> {
    let to = run_dir.join(format!("node{}.snapshot", node.slot));
    if to.exists() {
        std::fs::remove_dir_all(&to)?;
    }
    std::fs::create_dir_all(&to)?;
    node.pause(true).await?;
    let copied = copy_dir(&node.data_dir, &to);
    node.pause(false).await?;
    copied?;
    Ok(to)
}

/// SIGKILL, the data directory replaced by `snapshot`, restart.
pub async fn restore(node: &mut Node, snapshot: &Path) -> Result<()> {
    node.kill();
    clear_dir(&node.data_dir)?;
    copy_dir(snapshot, &node.data_dir)?;
    std::fs::remove_dir_all(snapshot)?;
    node.start().await
}

/// Fills the node's filesystem to the last byte.
pub fn fill(node: &Node) -> Result<()> {
    let path = node.data_dir.join(FILLER);
    let mut file = File::create(&path)?;
    let chunk = vec![0u8; 1 << 20];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e).context("filling the disk"),
        }
    }
    // Whatever is left below a chunk, byte by byte is too slow: a small
    // write loop finishes it.
    let small = [0u8; 512];
    while file.write(&small).map(|n| n > 0).unwrap_or(false) {}
    Ok(())
}

/// Removes the filler and restarts the node, as an operator does after
/// freeing space (a node whose log could not be written refuses writes
/// until restarted).
pub async fn unfill(node: &mut Node) -> Result<()> {
    let path = node.data_dir.join(FILLER);
    if path.exists() {
        std::fs::remove_file(&path)?;
    }
    node.kill();
    node.start().await
}

/// Empties `dir`, keeping `dir` itself (a mount point).
pub fn clear_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Copies the contents of `from` into `to` (`cp -a`, which keeps
/// modes and times and handles whatever RocksDB leaves there).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if !from.is_dir() {
        bail!("{} is not a directory", from.display());
    }
    let source = format!("{}/.", from.display());
    run("cp", &["-a", &source, &to.to_string_lossy()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_wal_is_the_highest_numbered_log_anywhere_below() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        for name in [
            "000007.log",
            "000012.log",
            "LOG",
            "000013.sst",
            "000009.log",
        ] {
            std::fs::write(db.join(name), b"x").unwrap();
        }
        assert_eq!(newest_wal(dir.path()).unwrap(), Some(db.join("000012.log")));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(newest_wal(empty.path()).unwrap(), None);
    }

    #[test]
    fn clearing_keeps_the_directory_and_removes_everything_in_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        clear_dir(dir.path()).unwrap();
        assert!(dir.path().is_dir());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
