//! Where the lake lives: the one interface (`LakeStore`) that puts a
//! finished file at its final name, says what is published, writes the
//! run's small reports, and removes what a crashed attempt left; recovery
//! goes through it too. Nothing else knows where the lake is. Each backend
//! is one file: `local.rs` (a folder), `object.rs` (a bucket); `out.rs`
//! reads `--out` and opens the one it names.

use super::{FileInfo, HashingFile, Sealed, Staged, WriteError};
use std::collections::HashSet;

/// Where the lake's tables live, for the kernel: the store and the URL of
/// the lake's root (`file:///…/` or `s3://bucket/prefix/`).
pub struct TableRoot {
    pub store: std::sync::Arc<dyn object_store::ObjectStore>,
    pub url: reqwest::Url,
}

/// A file of the lake as a listing gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Relative to the lake.
    pub path: String,
    pub bytes: u64,
    /// When it was last written, milliseconds since the epoch.
    pub modified_ms: i64,
}

/// A lake: paths are `/`-separated and relative to its root.
pub trait LakeStore: std::fmt::Debug + Send + Sync {
    /// Begin the file that will be at `rel`.
    fn stage(&self, rel: &str) -> Result<(Staged, HashingFile), WriteError>;
    /// Make a staged file durable, not yet visible.
    fn seal(
        &self,
        staged: Staged,
        file: HashingFile,
        rows: u64,
        stats: super::stats::FileStats,
    ) -> Result<Sealed, WriteError> {
        let (bytes, sha256) = file.sync()?;
        let info = FileInfo {
            path: staged.rel.clone(),
            rows,
            bytes,
            sha256,
            stats,
        };
        Ok(Sealed { staged, info })
    }
    /// Put a sealed file at its final name (or begin to: see `flush`).
    fn publish(&self, sealed: &Sealed) -> Result<(), WriteError>;
    /// Wait until every file published so far is at its final name. A lake
    /// may publish beside the writer (uploads); a local folder's rename is
    /// done when `publish` returns.
    fn flush(&self) -> Result<(), WriteError> {
        Ok(())
    }
    /// Whether a file is at `rel`.
    fn exists(&self, rel: &str) -> Result<bool, WriteError>;
    /// A file a committed checkpoint names: finish publishing it if a crash
    /// came between the commit and the publish; an error if it is gone.
    fn roll_forward(&self, rel: &str) -> Result<(), WriteError>;
    /// Remove the temporary files of run `run_id` that `committed` does not name.
    fn remove_strays(&self, run_id: &str, committed: &HashSet<String>) -> Result<(), WriteError>;
    /// Write a small file (a report, a marker) at `rel`, whole or not at all.
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), WriteError>;
    /// Write a small file at `rel` only if none is there (a conditional
    /// create): `Ok(false)` when one already is.
    fn create(&self, rel: &str, bytes: &[u8]) -> Result<bool, WriteError>;
    /// The contents of a small file, `None` if there is none.
    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, WriteError>;
    /// Where the file at `rel` is on this machine's disk, when the lake is
    /// a local folder (read in place rather than copied into memory).
    fn local_path(&self, _rel: &str) -> Option<std::path::PathBuf> {
        None
    }
    /// Every file below the folder `prefix` (without a trailing `/`), as
    /// paths relative to the lake, in no particular order; none if there is
    /// no such folder.
    fn list(&self, prefix: &str) -> Result<Vec<String>, WriteError> {
        Ok(self
            .list_meta(prefix)?
            .into_iter()
            .map(|f| f.path)
            .collect())
    }
    /// `list`, with each file's size and modification time.
    fn list_meta(&self, prefix: &str) -> Result<Vec<Listed>, WriteError>;
    /// Remove the file at `rel`; one already gone is no error.
    fn delete(&self, rel: &str) -> Result<(), WriteError>;
    /// `rel` as people know it: a path, or a URL.
    fn display(&self, rel: &str) -> String;
    /// Check that the lake can be reached (the bucket exists, the
    /// credentials are good) before anything is fetched.
    fn check(&self) -> Result<(), WriteError> {
        Ok(())
    }
    /// The lake's root as the Delta kernel reaches it: the store, its URL
    /// and the runtime its requests run on.
    fn table_root(&self) -> Result<TableRoot, WriteError>;
    /// The run was interrupted (Ctrl-C / SIGTERM): stop waiting on a lake
    /// that does not answer, after a short grace, so the run ends promptly.
    /// A local folder answers or fails at once.
    fn interrupt(&self) {}
}
