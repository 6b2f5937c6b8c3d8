//! A lake in a local folder: files are written under a hidden temporary
//! name beside the final one (`.name.inprogress`, which DuckDB, Spark and
//! pyarrow skip), fsynced, and renamed into place.

use super::store::{LakeStore, TableRoot};
use super::{
    HashingFile, Sealed, Staged, WriteError, all_tables, begin_staged, final_name, make_parent,
    publish_staged, staging_path, write_atomically,
};
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

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
    pub(crate) fn staging_path(&self, rel: &str) -> PathBuf {
        staging_path(&self.root.join(rel))
    }

    pub(crate) fn final_path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
}

/// A listed file's size and modification time.
fn listed(path: String, meta: &std::fs::Metadata) -> super::Listed {
    let modified_ms = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    super::Listed {
        path,
        bytes: meta.len(),
        modified_ms,
    }
}

impl LakeStore for LocalDir {
    fn local_path(&self, rel: &str) -> Option<PathBuf> {
        Some(self.final_path(rel))
    }

    fn stage(&self, rel: &str) -> Result<(Staged, HashingFile), WriteError> {
        begin_staged(self.staging_path(rel), rel)
    }

    /// Rename, then fsync the folder.
    fn publish(&self, sealed: &Sealed) -> Result<(), WriteError> {
        publish_staged(&sealed.staged.tmp, &self.final_path(&sealed.staged.rel))
    }

    fn exists(&self, rel: &str) -> Result<bool, WriteError> {
        let path = self.final_path(rel);
        path.try_exists()
            .map_err(|source| WriteError::Path { path, source })
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
        let run = rel
            .split('/')
            .find_map(|p| p.strip_prefix("run_id="))
            .unwrap_or("RUN");
        Err(WriteError::Format(format!(
            "{}: a file this run already published is gone from the lake (removed by another tool?); \
             this run cannot be resumed: `msgext runs drop {run} --out LAKE` removes it, and a new run \
             exports its list again",
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
        make_parent(&path)?;
        write_atomically(&path, bytes)
    }

    /// Staged and fsynced like `put`, then hard-linked into place: the link
    /// fails if a file is already there, so that of two runs only one creates
    /// it (where there are no hard links, an exclusive create instead).
    fn create(&self, rel: &str, bytes: &[u8]) -> Result<bool, WriteError> {
        let path = self.final_path(rel);
        make_parent(&path)?;
        let tmp = staging_path(&path);
        let io = |source| WriteError::Path {
            path: tmp.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(io)?;
        std::io::Write::write_all(&mut f, bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        let mut linked = std::fs::hard_link(&tmp, &path);
        if let Err(e) = &linked
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            // A file system without hard links (some mounted buckets):
            // an exclusive create, written whole before it is closed.
            linked = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, bytes)?;
                    f.sync_all()
                });
        }
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                if let Some(dir) = path.parent() {
                    super::sync_dir(dir)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(source) => Err(WriteError::Path { path, source }),
        }
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, WriteError> {
        let path = self.final_path(rel);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(WriteError::Path { path, source }),
        }
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<super::Listed>, WriteError> {
        let mut out = Vec::new();
        let mut folders = vec![prefix.to_owned()];
        while let Some(rel) = folders.pop() {
            let dir = self.final_path(&rel);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(WriteError::Path { path: dir, source }),
            };
            for e in entries {
                let e = e.map_err(|source| WriteError::Path {
                    path: dir.clone(),
                    source,
                })?;
                let child = format!("{rel}/{}", e.file_name().to_string_lossy());
                match e.file_type() {
                    Ok(t) if t.is_dir() => folders.push(child),
                    _ => match e.metadata() {
                        Ok(m) => out.push(listed(child, &m)),
                        // Removed since the folder was read.
                        Err(gone) if gone.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => {
                            let path = e.path();
                            return Err(WriteError::Path { path, source });
                        }
                    },
                }
            }
        }
        Ok(out)
    }

    fn delete(&self, rel: &str) -> Result<(), WriteError> {
        let path = self.final_path(rel);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(WriteError::Path { path, source }),
        }
    }

    fn display(&self, rel: &str) -> String {
        self.final_path(rel).display().to_string()
    }

    fn table_root(&self) -> Result<TableRoot, WriteError> {
        let bad = |why: String| WriteError::Path {
            path: self.root.clone(),
            source: std::io::Error::other(why),
        };
        let root =
            std::path::absolute(&self.root).map_err(|e| bad(format!("no absolute path: {e}")))?;
        let url = reqwest::Url::from_directory_path(&root)
            .map_err(|()| bad("cannot be named as a file:// URL".into()))?;
        Ok(TableRoot {
            // The log entry is fsynced, file and folder, before the commit
            // returns: `_SUCCESS` (fsynced after it) never outlives it.
            store: std::sync::Arc::new(
                object_store::local::LocalFileSystem::new().with_fsync(true),
            ),
            url,
        })
    }

    /// The folder exists or can be made, and a file can be made in it.
    fn check(&self) -> Result<(), WriteError> {
        let unwritable = |source| WriteError::Unwritable {
            what: "the output folder",
            path: self.root.clone(),
            setting: "--out",
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(unwritable)?;
        // A name of its own: two runs may check one folder at once.
        let probe = self.root.join(format!(
            ".msgext-write-check-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::write(&probe, b"").map_err(unwritable)?;
        std::fs::remove_file(&probe).map_err(unwritable)
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
            let sealed = lake.seal(staged, file, 1, Vec::new()).unwrap();
            if n == 0 {
                lake.publish(&sealed).unwrap();
            }
            if n < 2 {
                committed.insert(rel(n));
            }
        }
        // 0: published; 1: committed but still staged (a crash before the
        // rename); 2: staged, never committed.
        assert!(lake.exists(&rel(0)).unwrap() && !lake.exists(&rel(1)).unwrap());
        lake.roll_forward(&rel(0)).unwrap();
        lake.roll_forward(&rel(1)).unwrap();
        assert!(lake.exists(&rel(1)).unwrap());
        assert!(lake.staging_path(&rel(2)).exists());
        lake.remove_strays("r", &committed).unwrap();
        assert!(!lake.staging_path(&rel(2)).exists());
        assert!(
            lake.roll_forward(&rel(2)).is_err(),
            "gone: not rolled forward"
        );
        lake.put("_runs/r/summary.json", b"{}").unwrap();
        assert!(lake.exists("_runs/r/summary.json").unwrap());
        // A conditional create: the first wins, the second is told.
        assert!(lake.create("_runs/r/_CLAIM", b"one").unwrap());
        assert!(!lake.create("_runs/r/_CLAIM", b"two").unwrap());
        assert_eq!(
            lake.get("_runs/r/_CLAIM").unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(lake.get("_runs/r/none").unwrap(), None);
    }
}
