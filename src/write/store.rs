//! Where the lake lives: the one interface (`LakeStore`) that puts a
//! finished file at its final name, says what is published, writes the
//! run's small reports, and removes what a crashed attempt left; recovery
//! goes through it too. Nothing else knows where the lake is. `LocalDir` is
//! the local-folder implementation: files are written under a hidden
//! temporary name beside the final one (`.name.inprogress`, which DuckDB,
//! Spark and pyarrow skip), fsynced, and renamed into place. An object
//! store would complete a multipart upload where this renames.

use super::{
    FileInfo, HashingFile, Sealed, Staged, WriteError, all_tables, final_name, publish_staged,
    staging_path, write_atomically,
};
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A lake: paths are `/`-separated and relative to its root.
pub trait LakeStore: std::fmt::Debug + Send + Sync {
    /// Begin the file that will be at `rel`.
    fn stage(&self, rel: &str) -> Result<(Staged, HashingFile), WriteError>;
    /// Make a staged file durable, not yet visible.
    fn seal(&self, staged: Staged, file: HashingFile, rows: u64) -> Result<Sealed, WriteError> {
        let (bytes, sha256) = file.sync()?;
        let info = FileInfo {
            path: staged.rel.clone(),
            rows,
            bytes,
            sha256,
        };
        Ok(Sealed { staged, info })
    }
    /// Put a sealed file at its final name.
    fn publish(&self, sealed: &Sealed) -> Result<(), WriteError>;
    /// Whether a file is at `rel`.
    fn exists(&self, rel: &str) -> bool;
    /// A file a committed checkpoint names: finish publishing it if a crash
    /// came between the commit and the publish; an error if it is gone.
    fn roll_forward(&self, rel: &str) -> Result<(), WriteError>;
    /// Remove the temporary files of run `run_id` that `committed` does not name.
    fn remove_strays(&self, run_id: &str, committed: &HashSet<String>) -> Result<(), WriteError>;
    /// Write a small file (a report, a marker) at `rel`, whole or not at all.
    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), WriteError>;
}

/// A lake in a local folder.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: &Path) -> Self {
        LocalDir {
            root: root.to_owned(),
        }
    }

    /// Where the file for `rel` is staged while it is written.
    pub fn staging_path(&self, rel: &str) -> PathBuf {
        staging_path(&self.root.join(rel))
    }

    pub fn final_path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

impl LakeStore for LocalDir {
    fn stage(&self, rel: &str) -> Result<(Staged, HashingFile), WriteError> {
        let final_path = self.root.join(rel);
        let dir = final_path.parent().unwrap_or(&self.root).to_owned();
        std::fs::create_dir_all(&dir).map_err(|source| WriteError::Path {
            path: dir.clone(),
            source,
        })?;
        let tmp = staging_path(&final_path);
        let file = File::create(&tmp).map_err(|source| WriteError::Path {
            path: tmp.clone(),
            source,
        })?;
        Ok((
            Staged {
                tmp,
                final_path,
                rel: rel.to_owned(),
            },
            HashingFile::new(file),
        ))
    }

    /// Rename, then fsync the folder.
    fn publish(&self, sealed: &Sealed) -> Result<(), WriteError> {
        publish_staged(&sealed.staged.tmp, &sealed.staged.final_path)
    }

    fn exists(&self, rel: &str) -> bool {
        self.final_path(rel).exists()
    }

    fn roll_forward(&self, rel: &str) -> Result<(), WriteError> {
        let final_path = self.final_path(rel);
        if final_path.exists() {
            return Ok(());
        }
        let tmp = self.staging_path(rel);
        if tmp.exists() {
            return publish_staged(&tmp, &final_path);
        }
        Err(WriteError::Format(format!(
            "{}: committed by the ledger but missing; the folder was changed by hand?",
            final_path.display()
        )))
    }

    fn remove_strays(&self, run_id: &str, committed: &HashSet<String>) -> Result<(), WriteError> {
        for table in all_tables() {
            let Ok(days) = std::fs::read_dir(self.root.join(table)) else {
                continue;
            };
            for day in days.flatten() {
                let pdir = day.path().join(format!("run_id={run_id}"));
                let Ok(entries) = std::fs::read_dir(&pdir) else {
                    continue;
                };
                let day_name = day.file_name().to_string_lossy().into_owned();
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let Some(final_name) = final_name(&name) else {
                        continue;
                    };
                    let rel = format!("{table}/{day_name}/run_id={run_id}/{final_name}");
                    if !committed.contains(&rel) {
                        let p = e.path();
                        std::fs::remove_file(&p)
                            .map_err(|source| WriteError::Path { path: p, source })?;
                    }
                }
            }
        }
        Ok(())
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let path = self.final_path(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| WriteError::Path {
                path: dir.to_owned(),
                source,
            })?;
        }
        write_atomically(&path, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_rolls_committed_files_forward_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let lake = LocalDir::new(dir.path());
        let rel = |n: u32| format!("key_values/dt=2026-11-26/run_id=r/part-0000{n}-r.csv");
        let mut committed = HashSet::new();
        for n in 0..3 {
            let (staged, mut file) = lake.stage(&rel(n)).unwrap();
            std::io::Write::write_all(&mut file, b"a\r\n").unwrap();
            let sealed = lake.seal(staged, file, 1).unwrap();
            if n == 0 {
                lake.publish(&sealed).unwrap();
            }
            if n < 2 {
                committed.insert(rel(n));
            }
        }
        // 0: published; 1: committed but still staged (a crash before the
        // rename); 2: staged, never committed.
        assert!(lake.exists(&rel(0)) && !lake.exists(&rel(1)));
        lake.roll_forward(&rel(0)).unwrap();
        lake.roll_forward(&rel(1)).unwrap();
        assert!(lake.exists(&rel(1)));
        assert!(lake.staging_path(&rel(2)).exists());
        lake.remove_strays("r", &committed).unwrap();
        assert!(!lake.staging_path(&rel(2)).exists());
        assert!(
            lake.roll_forward(&rel(2)).is_err(),
            "gone: not rolled forward"
        );
        lake.put("_runs/r/summary.json", b"{}").unwrap();
        assert!(lake.exists("_runs/r/summary.json"));
    }
}
