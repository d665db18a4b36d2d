//! The node's permanent identity and its start generation.
//!
//! The node id is created on the first start and kept in
//! `<data_dir>/node_id`. A wiped data directory therefore means a new id,
//! so version-vector counters issued under the old id are never reused.
//! The generation, kept in the `meta` column family, is bumped at every
//! start so peers can tell a restarted node from a stale one.

use std::fs;
use std::io::Write;
use std::path::Path;

use ringkv_core::error::{Error, Result};
use ringkv_core::version::NodeId;
use ringkv_storage::{Cf, Engine, WriteBatch};

const NODE_ID_FILE: &str = "node_id";
const GENERATION_KEY: &[u8] = b"generation";

/// Reads the node id from the data directory, creating it on first start.
pub fn load_or_create_node_id(data_dir: &Path) -> Result<NodeId> {
    let path = data_dir.join(NODE_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            Error::Corrupt(format!(
                "{}: {e}; restore it or wipe the data directory",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = NodeId::random();
            let tmp = data_dir.join(format!("{NODE_ID_FILE}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                writeln!(f, "{id}")?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                fs::File::open(data_dir)?.sync_all()
            };
            write().map_err(|e| Error::Storage(format!("writing {}: {e}", path.display())))?;
            Ok(id)
        }
        Err(e) => Err(Error::Storage(format!("reading {}: {e}", path.display()))),
    }
}

/// Increments and returns the start generation.
pub fn bump_generation(engine: &dyn Engine) -> Result<u64> {
    let previous = match engine.get(Cf::Meta, GENERATION_KEY)? {
        None => 0,
        Some(bytes) => {
            let raw: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("stored generation is not 8 bytes".into()))?;
            u64::from_be_bytes(raw)
        }
    };
    let next = previous + 1;
    let mut batch = WriteBatch::new();
    batch.put(Cf::Meta, GENERATION_KEY, next.to_be_bytes().to_vec());
    engine.write(batch)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_storage::MemoryEngine;

    #[test]
    fn node_id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_node_id(dir.path()).unwrap();
        assert_eq!(load_or_create_node_id(dir.path()).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create_node_id(other.path()).unwrap(), first);
    }

    #[test]
    fn corrupt_node_id_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(NODE_ID_FILE), "not-an-id").unwrap();
        assert!(matches!(
            load_or_create_node_id(dir.path()),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn generation_increases_at_each_start() {
        let engine = MemoryEngine::new();
        assert_eq!(bump_generation(&engine).unwrap(), 1);
        assert_eq!(bump_generation(&engine).unwrap(), 2);
    }
}
