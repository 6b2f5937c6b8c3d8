//! Where the lake lives: the one interface (`LakeStore`) that puts a
//! finished file at its final name, says what is published, writes the
//! run's small reports, and removes what a crashed attempt left; recovery
//! goes through it too. Nothing else knows where the lake is. `LocalDir` is
//! the local-folder implementation: files are written under a hidden
//! temporary name beside the final one (`.name.inprogress`, which DuckDB,
//! Spark and pyarrow skip), fsynced, and renamed into place. `ObjectLake`
//! (in `object.rs`) is the object-store one: files are staged in the state
//! folder and uploaded in one PUT or a multipart upload completed last.

use super::{
    FileInfo, HashingFile, Sealed, Staged, WriteError, all_tables, begin_staged, final_name,
    make_parent, publish_staged, staging_path, write_atomically,
};
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Where the lake's tables live, for the kernel: the store and the URL of
/// the lake's root (`file:///…/` or `s3://bucket/prefix/`).
pub struct TableRoot {
    pub store: std::sync::Arc<dyn object_store::ObjectStore>,
    pub url: reqwest::Url,
}

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
    fn list(&self, prefix: &str) -> Result<Vec<String>, WriteError>;
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

/// Where `--out` points: a local folder or an object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Dir(PathBuf),
    /// `s3://bucket/prefix`, `gs://…` or `az://…`, without a trailing `/`.
    Url(String),
}

impl Out {
    /// A path, a `file://` URL, or an object-store URL (`s3://`, `s3a://`,
    /// `gs://`, `az://`, `abfs(s)://`, `azure://`). Anything that starts like
    /// a URL (`word:`) and is not a well-formed one is refused, with what was
    /// probably meant, rather than taken for a folder called `s3:`.
    pub fn parse(text: &str) -> Result<Out, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return match url_like_scheme(text) {
                Some(scheme) => Err(not_a_url(text, scheme)),
                None => Ok(Out::Dir(PathBuf::from(text))),
            };
        };
        if scheme.is_empty() || url_like_scheme(text).is_none() {
            return Ok(Out::Dir(PathBuf::from(text)));
        }
        // `user:password@` before the host: refused, and never echoed.
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(format!(
                "--out {scheme}://…: the URL holds credentials (user:password@); give the bucket as \
                 {scheme}://BUCKET/prefix and the credentials in the environment (AWS_*, \
                 GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*)"
            ));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" if rest.starts_with('/') => Ok(Out::Dir(PathBuf::from(rest))),
            "file" => Err(format!(
                "--out {text}: a file:// URL needs an absolute path (file:///path)"
            )),
            s if BUCKET_SCHEMES.contains(&s) => bucket_url(text, rest),
            "http" | "https" => Err(format!(
                "--out {text}: give the bucket as s3://BUCKET/prefix (gs://, az://); an S3-compatible \
                 endpoint goes in AWS_ENDPOINT_URL"
            )),
            other => Err(format!(
                "--out {text}: unknown scheme {other:?}; give a local folder or s3://, gs://, az://"
            )),
        }
    }
    /// How the lake is shown: the folder or the URL.
    pub fn display(&self) -> String {
        match self {
            Out::Dir(d) => d.display().to_string(),
            Out::Url(u) => u.clone(),
        }
    }

    /// The state folder when none is given: `OUT/_runs` for a folder; for a
    /// URL, one under the user's state folder (`$XDG_STATE_HOME`, or
    /// `~/.local/state`) named after the URL, so the same command finds it.
    pub fn default_state_dir(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PathBuf, String> {
        match self {
            Out::Dir(d) => Ok(d.join("_runs")),
            Out::Url(u) => {
                let base = env("XDG_STATE_HOME")
                    .filter(|s| s.starts_with('/'))
                    .map(PathBuf::from)
                    .or_else(|| {
                        env("HOME")
                            .filter(|s| !s.is_empty())
                            .map(|h| Path::new(&h).join(".local").join("state"))
                    })
                    .ok_or_else(|| {
                        format!(
                            "--out {u}: no HOME to keep the run's state under; give --state-dir"
                        )
                    })?;
                Ok(base.join("msgext").join(state_key(u)))
            }
        }
    }

    /// The lake behind this location; an object store's files are staged
    /// under `state_dir` until they are uploaded, and each of its requests,
    /// retries included, takes at most `store_timeout`.
    pub fn open(
        &self,
        state_dir: &Path,
        store_timeout: std::time::Duration,
    ) -> Result<std::sync::Arc<dyn LakeStore>, WriteError> {
        Ok(match self {
            Out::Dir(d) => std::sync::Arc::new(LocalDir::new(d)),
            Out::Url(u) => std::sync::Arc::new(super::ObjectLake::open(
                u,
                &state_dir.join("_staging"),
                store_timeout,
            )?),
        })
    }
}

/// The schemes of the object stores msgext writes to.
const BUCKET_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// The scheme of a text that starts like a URL (`word:`, RFC 3986's scheme
/// characters, at least two of them so that `C:` stays a drive).
fn url_like_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (scheme.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(scheme)
}

/// Why `text` (`s3:/lake/x`, `s3:lake/x`, `backup:2026`) is not taken as
/// `--out`, and what was probably meant.
fn not_a_url(text: &str, scheme: &str) -> String {
    let rest = text[scheme.len() + 1..].trim_start_matches('/');
    let lower = scheme.to_ascii_lowercase();
    if BUCKET_SCHEMES.contains(&lower.as_str()) {
        format!("--out {text} is not a well-formed URL; did you mean {lower}://{rest}?")
    } else if lower == "file" {
        format!("--out {text} is not a well-formed URL; did you mean file:///{rest}?")
    } else {
        format!(
            "--out {text} looks like a URL but is not one; give s3://, gs:// or az:// for a bucket, \
             or ./{text} for a folder of that name"
        )
    }
}

/// A bucket URL (`rest` is what follows `scheme://`): a bucket, a prefix of
/// plain segments, no query or fragment (which the store would drop or refuse).
fn bucket_url(text: &str, rest: &str) -> Result<Out, String> {
    if rest.contains(['?', '#']) {
        return Err(format!(
            "--out {text}: a bucket URL takes no ?query or #fragment (settings go in the environment)"
        ));
    }
    let rest = rest.trim_end_matches('/');
    let mut segments = rest.split('/');
    if segments.next().is_none_or(str::is_empty) {
        return Err(format!("--out {text}: no bucket (s3://BUCKET/prefix)"));
    }
    let segments: Vec<&str> = segments.collect();
    if segments.iter().any(|p| p.is_empty()) {
        let scheme = &text[..text.find("://").unwrap_or(0)];
        let fixed: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        return Err(format!(
            "--out {text}: an empty prefix segment ('//'); did you mean {scheme}://{}?",
            fixed.join("/")
        ));
    }
    if segments.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!("--out {text}: '.' and '..' are not prefixes"));
    }
    Ok(Out::Url(text.trim_end_matches('/').to_owned()))
}

/// A folder name for a URL: readable, and unique by a hash of the whole URL.
fn state_key(url: &str) -> String {
    use sha2::Digest;
    let readable: String = url
        .replace("://", "-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let hash = sha2::Sha256::digest(url.as_bytes());
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{readable}-{hex}")
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

    fn list(&self, prefix: &str) -> Result<Vec<String>, WriteError> {
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
                    _ => out.push(child),
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

    #[test]
    fn out_names_a_folder_or_a_bucket_and_nothing_else() {
        let table: [(&str, Result<Out, &str>); 27] = [
            ("s3:/lake/nightly", Err("did you mean s3://lake/nightly?")),
            ("s3:lake/x", Err("did you mean s3://lake/x?")),
            ("gs:/b/x", Err("did you mean gs://b/x?")),
            ("az:/c/x", Err("did you mean az://c/x?")),
            ("S3:/Lake", Err("did you mean s3://Lake?")),
            ("file:/data/lake", Err("did you mean file:///data/lake?")),
            ("backup:2026", Err("./backup:2026 for a folder")),
            ("./backup:2026", Ok(Out::Dir("./backup:2026".into()))),
            ("C:/lake", Ok(Out::Dir("C:/lake".into()))),
            ("s3://lake//x", Err("did you mean s3://lake/x?")),
            ("s3://lake/x?region=eu", Err("no ?query or #fragment")),
            ("s3://lake/x#frag", Err("no ?query or #fragment")),
            ("s3://lake/x/", Ok(Out::Url("s3://lake/x".into()))),
            ("lake/with:colon", Ok(Out::Dir("lake/with:colon".into()))),
            ("lake", Ok(Out::Dir("lake".into()))),
            ("/data/lake", Ok(Out::Dir("/data/lake".into()))),
            ("file:///data/lake", Ok(Out::Dir("/data/lake".into()))),
            ("file://lake", Err("absolute path")),
            (
                "s3://bucket/prefix/",
                Ok(Out::Url("s3://bucket/prefix".into())),
            ),
            ("gs://bucket", Ok(Out::Url("gs://bucket".into()))),
            ("az://container/p", Ok(Out::Url("az://container/p".into()))),
            ("s3:///prefix", Err("no bucket")),
            ("s3://b/../x", Err("'..'")),
            ("https://b.s3.amazonaws.com/p", Err("AWS_ENDPOINT_URL")),
            ("ftp://host/x", Err("unknown scheme")),
            ("s3://user:SECRET@bucket/x", Err("holds credentials")),
            ("https://u:SECRET@host/x", Err("holds credentials")),
        ];
        for (text, want) in table {
            match (Out::parse(text), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{text}"),
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{text}: {e}");
                    assert!(!e.contains("SECRET"), "{text}: credentials echoed: {e}");
                }
                (got, w) => panic!("{text}: {got:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn a_bucket_s_state_lives_under_the_user_state_folder_named_after_the_url() {
        let env = |home: Option<&'static str>, xdg: Option<&'static str>| {
            move |k: &str| match k {
                "HOME" => home.map(str::to_owned),
                "XDG_STATE_HOME" => xdg.map(str::to_owned),
                _ => None,
            }
        };
        let out = Out::Url("s3://bucket/lake".into());
        let a = out.default_state_dir(&env(Some("/home/u"), None)).unwrap();
        assert!(
            a.to_string_lossy()
                .starts_with("/home/u/.local/state/msgext/s3-bucket_lake-"),
            "{a:?}"
        );
        let b = out
            .default_state_dir(&env(Some("/home/u"), Some("/var/st")))
            .unwrap();
        assert!(
            b.to_string_lossy()
                .starts_with("/var/st/msgext/s3-bucket_lake-"),
            "{b:?}"
        );
        assert_eq!(a.file_name(), b.file_name(), "keyed by the URL only");
        let other = Out::Url("s3://bucket/lake2".into());
        assert_ne!(
            other
                .default_state_dir(&env(Some("/h"), None))
                .unwrap()
                .file_name(),
            a.file_name()
        );
        assert!(
            out.default_state_dir(&env(None, None))
                .unwrap_err()
                .contains("--state-dir")
        );
        let dir = Out::Dir("/l".into());
        assert_eq!(
            dir.default_state_dir(&env(None, None)).unwrap(),
            PathBuf::from("/l/_runs")
        );
    }
}
