//! The lake in an object store (S3 and S3-compatible stores, GCS, Azure), the
//! second `LakeStore`. A file is written and fsynced in the state folder
//! (`<state>/_staging/<rel>`), so that a committed file survives a crash
//! whatever the network does; publishing uploads it to `<prefix>/<rel>` in one
//! PUT, or in a multipart upload of `PART_BYTES` parts that is completed last.
//! Either way the object appears at its final key whole or not at all, and
//! nothing temporary ever shows under the bucket's prefix. A multipart
//! upload's id is recorded beside the staged file before its first part, so
//! that a resume aborts an upload a crash left behind.
//!
//! The interface is synchronous (the writer runs on a blocking thread);
//! requests run on the process's runtime, with `block_in_place` when called
//! from one of its worker threads. An upload is a task on that runtime:
//! `publish` starts it and returns, `flush` waits for them all.

mod refusal;

use super::{HashingFile, Sealed, Staged, WriteError, store::LakeStore};
use object_store::multipart::MultipartStore;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, PutOptions};
pub(crate) use refusal::explain;
use refusal::{
    NO_CONDITIONAL_WRITES, Refusal, credential_variables, no_credentials, plain_http_refused,
    redact, timed_out,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Files up to this size go up in one PUT; larger ones in parts of this
/// size, one at a time (the memory an upload takes).
pub(crate) const PART_BYTES: usize = 8 << 20;

/// object_store's own limits on one attempt of a request and on opening a
/// connection (`ClientOptions::default`).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The client settings that keep one attempt (and one connection) within
/// `budget`, so that the budget bounds a whole request with its retries: a
/// store that takes a connection and never answers fails the run after
/// `budget`, not after 30 s an attempt. A limit the user set in the
/// environment (`AWS_TIMEOUT`, `GOOGLE_CONNECT_TIMEOUT`, …) is theirs and
/// is left as it is.
fn attempt_timeouts(
    budget: Duration,
    env_prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(object_store::ClientConfigKey, String)> {
    use object_store::ClientConfigKey as K;
    [
        (K::Timeout, "TIMEOUT", ATTEMPT_TIMEOUT),
        (K::ConnectTimeout, "CONNECT_TIMEOUT", CONNECT_TIMEOUT),
    ]
    .into_iter()
    .filter(|(_, name, _)| env(&format!("{env_prefix}{name}")).is_none())
    .map(|(key, _, default)| (key, format!("{}ms", default.min(budget).as_millis().max(1))))
    .collect()
}

/// The suffix of the file recording a multipart upload's id.
const UPLOAD_SUFFIX: &str = ".upload";

/// The store and where the lake is in it: what an upload needs, shared by
/// the writer and the uploads in flight.
struct Bucket {
    /// `s3://bucket/prefix`, for messages.
    url: String,
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    prefix: Key,
    staging: PathBuf,
    /// How long one request may take, its retries included.
    budget: Duration,
    /// The command's runtime, which the requests run on.
    handle: tokio::runtime::Handle,
    /// Set by `interrupt`: when the requests still waiting give up.
    give_up_at: tokio::sync::watch::Sender<Option<tokio::time::Instant>>,
    /// A request went unanswered for `budget`: best-effort requests (the
    /// abort of a failed upload, which the resume does anyway) are not
    /// sent, so that a silent store fails the run after one `budget`.
    stalled: std::sync::atomic::AtomicBool,
}

/// After Ctrl-C / SIGTERM, how long a request may still take: a store that
/// answers finishes the run's reports in that time; one that does not
/// answer does not keep an interrupted run waiting for `--store-timeout`.
pub(crate) const INTERRUPT_GRACE: Duration = Duration::from_secs(3);

/// Why a request to the store was cut short by msgext itself.
#[derive(Debug, thiserror::Error)]
enum CutShort {
    #[error("no answer within --store-timeout")]
    Timeout,
    #[error("interrupted (Ctrl-C / SIGTERM) while waiting for the store")]
    Interrupted,
}

impl CutShort {
    fn into_store_error(self) -> object_store::Error {
        let source: Box<dyn std::error::Error + Send + Sync> = match self {
            CutShort::Timeout => Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, self)),
            CutShort::Interrupted => Box::new(self),
        };
        object_store::Error::Generic {
            store: "msgext",
            source,
        }
    }
}

/// Uploads run beside the writer, at most this many at a time; publishing
/// one more waits for the oldest. Each reads its file one part at a time.
pub(crate) const UPLOADS_IN_FLIGHT: usize = 2;

type Upload = tokio::task::JoinHandle<Result<(), WriteError>>;

pub(crate) struct ObjectLake {
    bucket: Arc<Bucket>,
    /// Uploads in flight, oldest first.
    uploads: std::sync::Mutex<std::collections::VecDeque<Upload>>,
}

impl std::fmt::Debug for ObjectLake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectLake")
            .field("url", &self.bucket.url)
            .field("staging", &self.bucket.staging)
            .finish()
    }
}

impl ObjectLake {
    /// The store of `url` (`s3://`, `gs://`, `az://`), configured from the
    /// environment the way the cloud's own tools are (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`), with a runtime of its own for its requests.
    /// `budget` bounds each request, its retries included (`--store-timeout`).
    pub(crate) fn open(url: &str, staging: &Path, budget: Duration) -> Result<Self, WriteError> {
        Ok(ObjectLake {
            bucket: Arc::new(Bucket::open(url, staging, budget)?),
            uploads: Default::default(),
        })
    }

    /// Wait for one upload; a crashed one is an error like a failed one.
    fn join(&self, upload: Upload) -> Result<(), WriteError> {
        match self.bucket.block(upload) {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(WriteError::Store(format!(
                "{}: an upload crashed: {e}",
                self.bucket.url
            ))),
            None => Err(self
                .bucket
                .err("", CutShort::Interrupted.into_store_error())),
        }
    }
}

impl Bucket {
    fn open(url: &str, staging: &Path, budget: Duration) -> Result<Self, WriteError> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as S3Key};
        use object_store::azure::{AzureConfigKey as AzKey, MicrosoftAzureBuilder};
        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey as GsKey};
        let retry = object_store::RetryConfig {
            retry_timeout: budget,
            ..Default::default()
        };
        let env = |k: &str| std::env::var(k).ok();
        let bad = |e: &dyn std::fmt::Display| WriteError::Store(format!("{url}: {e}"));
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e))?;
        let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|e| bad(&e))?;
        let prefix = Key::parse(prefix).map_err(|e| bad(&e))?;
        // The three clients are set up alike; their builders share no trait.
        macro_rules! client {
            ($builder:ty, $key:path, $env_prefix:literal) => {{
                let mut b = <$builder>::from_env().with_url(url).with_retry(retry);
                for (k, v) in attempt_timeouts(budget, $env_prefix, &env) {
                    b = b.with_config($key(k), v);
                }
                let s = Arc::new(b.build().map_err(|e| bad(&redact(&e.to_string())))?);
                (s.clone(), s)
            }};
        }
        let (store, multipart): (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) = match scheme {
            ObjectStoreScheme::AmazonS3 => {
                if let Some(why) = plain_http_refused(&env) {
                    return Err(bad(&why));
                }
                client!(AmazonS3Builder, S3Key::Client, "AWS_")
            }
            ObjectStoreScheme::GoogleCloudStorage => {
                client!(GoogleCloudStorageBuilder, GsKey::Client, "GOOGLE_")
            }
            ObjectStoreScheme::MicrosoftAzure => {
                client!(MicrosoftAzureBuilder, AzKey::Client, "AZURE_")
            }
            other => {
                return Err(bad(&format!(
                    "not an object store msgext writes to ({other:?})"
                )));
            }
        };
        // The store's requests run on the command's runtime; a blocking
        // caller waits for them in `block`.
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| bad(&"a bucket is opened from within msgext's runtime"))?;
        Ok(Bucket {
            url: url.trim_end_matches('/').to_owned(),
            store,
            multipart,
            prefix,
            staging: staging.to_owned(),
            budget,
            handle,
            give_up_at: tokio::sync::watch::channel(None).0,
            stalled: Default::default(),
        })
    }

    /// `f` until it ends, or until the run is interrupted and
    /// `INTERRUPT_GRACE` has passed (then `None`).
    async fn until_interrupted<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        let mut give_up_at = self.give_up_at.subscribe();
        let interrupted = async move {
            let Ok(at) = give_up_at.wait_for(Option::is_some).await.map(|at| *at) else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(at.unwrap_or_else(tokio::time::Instant::now)).await
        };
        tokio::select! {
            out = f => Some(out),
            () = interrupted => None,
        }
    }

    /// Run `f` on the store's runtime, from a blocking caller, until it
    /// ends or the run is interrupted (`until_interrupted`).
    fn block<F: std::future::Future>(&self, f: F) -> Option<F::Output> {
        tokio::task::block_in_place(|| self.handle.block_on(self.until_interrupted(f)))
    }

    /// One request, to its answer or at most `budget` (`--store-timeout`,
    /// whatever its attempts and retries do), or until the run is interrupted.
    async fn request_async<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, object_store::Error>>,
    ) -> Result<T, object_store::Error> {
        match self
            .until_interrupted(tokio::time::timeout(self.budget, f))
            .await
        {
            Some(Ok(answer)) => answer,
            Some(Err(_elapsed)) => {
                self.stalled
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Err(CutShort::Timeout.into_store_error())
            }
            None => Err(CutShort::Interrupted.into_store_error()),
        }
    }

    /// `request_async` for a blocking caller (the writer, `msgext runs`).
    fn request<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, object_store::Error>>,
    ) -> Result<T, object_store::Error> {
        self.block(self.request_async(f))
            .unwrap_or_else(|| Err(CutShort::Interrupted.into_store_error()))
    }

    /// An async piece of work (an upload's abort) for a blocking caller.
    fn wait(
        &self,
        f: impl std::future::Future<Output = Result<(), WriteError>>,
    ) -> Result<(), WriteError> {
        self.block(f)
            .unwrap_or_else(|| Err(self.err("", CutShort::Interrupted.into_store_error())))
    }

    /// Stop waiting on the store `INTERRUPT_GRACE` from now.
    fn interrupt(&self) {
        let at = tokio::time::Instant::now() + INTERRUPT_GRACE;
        self.give_up_at.send_if_modified(|g| {
            let first = g.is_none();
            g.get_or_insert(at);
            first
        });
    }

    fn key(&self, rel: &str) -> Result<Key, WriteError> {
        let joined = if self.prefix.as_ref().is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix.as_ref())
        };
        Key::parse(&joined).map_err(|e| WriteError::Store(format!("{}: {e}", self.display(rel))))
    }

    /// What a person needs from a failed request: where, what it means, and
    /// the store's own words, with any credential cut out.
    fn err(&self, rel: &str, e: object_store::Error) -> WriteError {
        let text = e.to_string();
        // No credential in the environment: the client asked the instance
        // metadata service, which did not give one. Its words (a refused
        // request to a link-local address) would only mislead.
        if let Some(why) = no_credentials(&self.url, &text) {
            return WriteError::Store(format!("{}: {why}", self.display(rel)));
        }
        let hint = match Refusal::of(&e) {
            Some(Refusal::Denied) => &format!(
                "access denied; check the credentials ({}) and the bucket's policy: ",
                credential_variables(&self.url)
            ),
            Some(Refusal::NoBucket) => "the bucket does not exist (or the endpoint is wrong): ",
            Some(Refusal::NotFound) => "not found; does the bucket exist? ",
            Some(Refusal::NoConditionalWrites) => NO_CONDITIONAL_WRITES,
            None if timed_out(&e) => &format!(
                "no answer within --store-timeout {} s (each attempt and its retries); \
                 is the store reachable from here? ",
                self.budget.as_secs_f64()
            ),
            None => "",
        };
        WriteError::Store(redact(&format!("{}: {hint}{text}", self.display(rel))))
    }

    fn staged_path(&self, rel: &str) -> PathBuf {
        self.staging.join(rel)
    }

    fn upload_record(local: &Path) -> PathBuf {
        let mut name = local.as_os_str().to_owned();
        name.push(UPLOAD_SUFFIX);
        PathBuf::from(name)
    }

    /// Abort the multipart upload recorded for the staged file `local`, if any.
    async fn abort_recorded(&self, local: &Path, rel: &str) -> Result<(), WriteError> {
        let record = Self::upload_record(local);
        let id = match tokio::fs::read_to_string(&record).await {
            Ok(id) => id,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(WriteError::Path {
                    path: record,
                    source,
                });
            }
        };
        let key = self.key(rel)?;
        let id = id.trim().to_owned();
        let aborted = self.multipart.abort_multipart(&key, &id);
        if let Err(e) = self.request_async(aborted).await {
            // Gone already: the crash came after the upload completed (S3
            // answers 404 NoSuchUpload). Anything else leaves at worst an
            // incomplete upload, which costs storage, not correctness: say
            // so and go on (a lifecycle rule aborts such uploads).
            let text = e.to_string();
            let gone =
                matches!(e, object_store::Error::NotFound { .. }) || text.contains("NoSuchUpload");
            if !gone {
                tracing::warn!(
                    "{}: could not abort the multipart upload {id} a crash left: {}",
                    self.display(rel),
                    redact(&text)
                );
            }
        }
        tokio::fs::remove_file(&record)
            .await
            .map_err(|source| WriteError::Path {
                path: record,
                source,
            })
    }

    /// Upload a staged file to its final key (one PUT, or a multipart
    /// upload recorded beside it), then remove it: a task on the runtime,
    /// its file I/O on tokio's blocking pool.
    async fn upload(&self, local: &Path, rel: &str) -> Result<(), WriteError> {
        let key = self.key(rel)?;
        let io = |source| WriteError::Path {
            path: local.to_owned(),
            source,
        };
        let mut file = tokio::fs::File::open(local).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let part_bytes = crate::failpoint::size("PART_BYTES", PART_BYTES);
        if len <= part_bytes as u64 {
            let mut bytes = Vec::with_capacity(len as usize);
            file.read_to_end(&mut bytes).await.map_err(io)?;
            self.request_async(self.store.put(&key, bytes.into()))
                .await
                .map_err(|e| self.err(rel, e))?;
        } else {
            let id = self
                .request_async(self.multipart.create_multipart(&key))
                .await
                .map_err(|e| self.err(rel, e))?;
            // Recorded before any part goes up, so that a crash from here on
            // leaves an upload the resume knows to abort.
            let record = Self::upload_record(local);
            let (at, text) = (record.clone(), id.clone());
            tokio::task::spawn_blocking(move || super::write_atomically(&at, text.as_bytes()))
                .await
                .map_err(|e| WriteError::Store(format!("{}: {e}", record.display())))??;
            let done = match self.put_parts(&mut file, &key, &id, rel, part_bytes).await {
                Ok(parts) => self
                    .request_async(self.multipart.complete_multipart(&key, &id, parts))
                    .await
                    .map_err(|e| self.err(rel, e)),
                Err(e) => Err(e),
            };
            crate::failpoint::hit("completed_upload");
            if let Err(e) = done {
                // Best effort, and not at a store that stopped answering:
                // the resume aborts it otherwise.
                if !self.stalled.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = self.abort_recorded(local, rel).await;
                }
                return Err(e);
            }
            tokio::fs::remove_file(&record)
                .await
                .map_err(|source| WriteError::Path {
                    path: record,
                    source,
                })?;
        }
        tracing::debug!(file = %self.display(rel), bytes = len, "uploaded");
        tokio::fs::remove_file(local).await.map_err(io)
    }

    async fn put_parts(
        &self,
        file: &mut tokio::fs::File,
        key: &Key,
        id: &str,
        rel: &str,
        part_bytes: usize,
    ) -> Result<Vec<object_store::multipart::PartId>, WriteError> {
        let id = id.to_owned();
        let mut parts = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(part_bytes);
            (&mut *file)
                .take(part_bytes as u64)
                .read_to_end(&mut buf)
                .await
                .map_err(|source| WriteError::Path {
                    path: self.staged_path(rel),
                    source,
                })?;
            if buf.is_empty() {
                return Ok(parts);
            }
            let part = self.multipart.put_part(key, &id, parts.len(), buf.into());
            let part = self.request_async(part).await;
            parts.push(part.map_err(|e| self.err(rel, e))?);
            crate::failpoint::hit("uploaded_part");
        }
    }

    /// Every file staged under `dir`, as (local path, lake-relative path).
    fn staged_files(&self, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                self.staged_files(&path, out);
            } else if let Ok(rel) = path.strip_prefix(&self.staging) {
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((path, rel.join("/")));
            }
        }
    }
}

impl LakeStore for ObjectLake {
    fn stage(&self, rel: &str) -> Result<(Staged, HashingFile), WriteError> {
        self.bucket.stage(rel)
    }

    /// Start the upload beside the writer (after the oldest, if
    /// `UPLOADS_IN_FLIGHT` are running); its error shows at the next publish
    /// or at `flush`. The file stays staged until it is up.
    fn publish(&self, sealed: &Sealed) -> Result<(), WriteError> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        while uploads.len() >= UPLOADS_IN_FLIGHT || uploads.front().is_some_and(|u| u.is_finished())
        {
            if let Some(u) = uploads.pop_front() {
                self.join(u)?;
            }
        }
        let (bucket, tmp, rel) = (
            self.bucket.clone(),
            sealed.staged.tmp.clone(),
            sealed.staged.rel.clone(),
        );
        let upload = async move { bucket.upload(&tmp, &rel).await };
        uploads.push_back(self.bucket.handle.spawn(upload));
        Ok(())
    }

    fn flush(&self) -> Result<(), WriteError> {
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        let mut first = Ok(());
        while let Some(u) = uploads.pop_front() {
            let r = self.join(u);
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    fn exists(&self, rel: &str) -> Result<bool, WriteError> {
        self.bucket.exists(rel)
    }

    fn roll_forward(&self, rel: &str) -> Result<(), WriteError> {
        self.bucket.roll_forward(rel)
    }

    fn remove_strays(&self, run_id: &str, committed: &HashSet<String>) -> Result<(), WriteError> {
        self.bucket.remove_strays(run_id, committed)
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), WriteError> {
        self.bucket.put(rel, bytes)
    }

    fn create(&self, rel: &str, bytes: &[u8]) -> Result<bool, WriteError> {
        self.bucket.create(rel, bytes)
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, WriteError> {
        self.bucket.get(rel)
    }

    fn list_meta(&self, prefix: &str) -> Result<Vec<super::Listed>, WriteError> {
        self.bucket.list_meta(prefix)
    }

    fn delete(&self, rel: &str) -> Result<(), WriteError> {
        self.bucket.delete(rel)
    }

    fn display(&self, rel: &str) -> String {
        self.bucket.display(rel)
    }

    fn check(&self) -> Result<(), WriteError> {
        self.bucket.check()
    }

    fn table_root(&self) -> Result<super::TableRoot, WriteError> {
        let b = &self.bucket;
        let url = reqwest::Url::parse(&format!("{}/", b.url))
            .map_err(|e| WriteError::Store(format!("{}: {e}", b.url)))?;
        Ok(super::TableRoot {
            store: b.store.clone(),
            url,
        })
    }

    fn interrupt(&self) {
        self.bucket.interrupt()
    }
}

impl Bucket {
    fn stage(&self, rel: &str) -> Result<(Staged, HashingFile), WriteError> {
        self.key(rel)?;
        super::begin_staged(self.staged_path(rel), rel)
    }

    fn exists(&self, rel: &str) -> Result<bool, WriteError> {
        match self.request(self.store.head(&self.key(rel)?)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Still staged: the upload did not finish (or its staged copy was not
    /// yet removed); upload it again, after aborting a recorded multipart
    /// upload. Not staged: it must be in the store.
    fn roll_forward(&self, rel: &str) -> Result<(), WriteError> {
        let local = self.staged_path(rel);
        if local.exists() {
            return self.wait(async {
                self.abort_recorded(&local, rel).await?;
                self.upload(&local, rel).await
            });
        }
        if self.exists(rel)? {
            return Ok(());
        }
        Err(WriteError::Store(format!(
            "{}: committed by the ledger but neither in the store nor staged in {}; \
             was it deleted by hand?",
            self.display(rel),
            self.staging.display()
        )))
    }

    /// Staged files of `run_id` that no checkpoint committed are removed, and
    /// every multipart upload recorded for the run is aborted.
    fn remove_strays(&self, run_id: &str, committed: &HashSet<String>) -> Result<(), WriteError> {
        let mut files = Vec::new();
        self.staged_files(&self.staging, &mut files);
        let in_partition = format!("/run_id={run_id}/");
        let reports = format!("_runs/{run_id}/");
        let ours = |rel: &str| rel.contains(&in_partition) || rel.starts_with(&reports);
        for (path, rel) in files.iter().filter(|(_, rel)| ours(rel)) {
            if let Some(file_rel) = rel.strip_suffix(UPLOAD_SUFFIX) {
                let staged = self.staged_path(file_rel);
                self.wait(self.abort_recorded(&staged, file_rel))?;
            } else if !committed.contains(rel) && !rel.starts_with(&reports) {
                std::fs::remove_file(path).map_err(|source| WriteError::Path {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    fn put(&self, rel: &str, bytes: &[u8]) -> Result<(), WriteError> {
        let key = self.key(rel)?;
        self.request(self.store.put(&key, bytes.to_vec().into()))
            .map(|_| ())
            .map_err(|e| self.err(rel, e))
    }

    fn create(&self, rel: &str, bytes: &[u8]) -> Result<bool, WriteError> {
        let key = self.key(rel)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.request(self.store.put_opts(&key, bytes.to_vec().into(), opts)) {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, WriteError> {
        let key = self.key(rel)?;
        let got = self.request(async {
            let r = self.store.get(&key).await?;
            r.bytes().await
        });
        match got {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// One flat listing of everything below `prefix` (the store pages it,
    /// 1,000 keys a request on S3), not a request a folder: a lake of years
    /// of nightly runs is listed in a few requests at each run's start.
    fn list_meta(&self, prefix: &str) -> Result<Vec<super::Listed>, WriteError> {
        let root = self.prefix.as_ref();
        let strip = |key: &Key| {
            let k = key.as_ref();
            match root {
                "" => k.to_owned(),
                r => k
                    .strip_prefix(r)
                    .unwrap_or(k)
                    .trim_start_matches('/')
                    .to_owned(),
            }
        };
        use futures_util::TryStreamExt;
        let folder = self.key(prefix)?;
        let listed: Vec<object_store::ObjectMeta> = self
            .request(self.store.list(Some(&folder)).try_collect())
            .map_err(|e| self.err(prefix, e))?;
        Ok(listed
            .iter()
            .map(|o| super::Listed {
                path: strip(&o.location),
                bytes: o.size,
                modified_ms: o.last_modified.timestamp_millis(),
            })
            .collect())
    }

    fn delete(&self, rel: &str) -> Result<(), WriteError> {
        match self.request(self.store.delete(&self.key(rel)?)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    fn display(&self, rel: &str) -> String {
        format!("{}/{rel}", self.url)
    }

    /// One listing of the prefix's first level: a missing bucket, a bad
    /// credential or an unreachable endpoint shows here, before any API call.
    fn check(&self) -> Result<(), WriteError> {
        self.request(self.store.list_with_delimiter(Some(&self.prefix)))
            .map(|_| ())
            .map_err(|e| self.err("", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_timeout_bounds_each_attempt_unless_the_environment_sets_it() {
        let s = Duration::from_secs;
        type Case = (
            Duration,
            &'static str,
            &'static [&'static str],
            &'static [(&'static str, &'static str)],
        );
        let table: [Case; 5] = [
            (
                s(2),
                "AWS_",
                &[],
                &[("timeout", "2000ms"), ("connect_timeout", "2000ms")],
            ),
            (
                s(10),
                "AWS_",
                &[],
                &[("timeout", "10000ms"), ("connect_timeout", "5000ms")],
            ),
            (
                s(60),
                "AWS_",
                &[],
                &[("timeout", "30000ms"), ("connect_timeout", "5000ms")],
            ),
            (
                s(2),
                "AWS_",
                &["AWS_TIMEOUT"],
                &[("connect_timeout", "2000ms")],
            ),
            (
                s(2),
                "GOOGLE_",
                &[
                    "AWS_TIMEOUT",
                    "AWS_CONNECT_TIMEOUT",
                    "GOOGLE_CONNECT_TIMEOUT",
                ],
                &[("timeout", "2000ms")],
            ),
        ];
        for (budget, prefix, set, want) in table {
            let env = |k: &str| set.contains(&k).then(|| "7s".to_owned());
            let got: Vec<(String, String)> = attempt_timeouts(budget, prefix, &env)
                .into_iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v))
                .collect();
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(got, want, "{budget:?} {prefix} {set:?}");
        }
    }

    #[test]
    fn a_timeout_is_told_from_its_causes() {
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "request failed")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        use std::io::{Error, ErrorKind};
        assert!(timed_out(&Error::from(ErrorKind::TimedOut)));
        assert!(timed_out(&Wrap(Error::from(ErrorKind::TimedOut))));
        assert!(!timed_out(&Wrap(Error::from(ErrorKind::ConnectionRefused))));
        assert!(!timed_out(&Error::other("timed out, says the text only")));
    }

    #[test]
    fn a_plain_http_endpoint_without_aws_allow_http_names_the_setting() {
        let env = |endpoint: Option<&'static str>, allow: Option<&'static str>| {
            move |k: &str| match k {
                "AWS_ENDPOINT_URL" => endpoint.map(str::to_owned),
                "AWS_ALLOW_HTTP" => allow.map(str::to_owned),
                _ => None,
            }
        };
        let refused = plain_http_refused(&env(Some("http://minio:9000"), None)).unwrap();
        assert!(refused.contains("AWS_ALLOW_HTTP=true") && refused.contains("http://minio:9000"));
        for (endpoint, allow) in [
            (Some("http://minio:9000"), Some("true")),
            (Some("http://minio:9000"), Some("TRUE")),
            (Some("https://minio:9000"), None),
            (None, None),
        ] {
            assert_eq!(
                plain_http_refused(&env(endpoint, allow)),
                None,
                "{endpoint:?} {allow:?}"
            );
        }
        // The error object_store gave here for an s3:// URL without credentials.
        let text = "Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token \
                    in 3.6ms - Server returned non-2xx status code: 403 Forbidden";
        let said = no_credentials("s3://b/p", text).unwrap();
        assert!(
            said.starts_with("no credentials were found: an s3:// URL reads AWS_ACCESS_KEY_ID")
                && !said.contains("169.254"),
            "{said}"
        );
        assert_eq!(
            no_credentials("s3://b/p", "403 Forbidden: AccessDenied"),
            None
        );
        assert!(credential_variables("s3://b/p").contains("AWS_ACCESS_KEY_ID"));
        assert!(!credential_variables("s3://b/p").contains("GOOGLE"));
        assert!(credential_variables("gs://b/p").contains("GOOGLE_APPLICATION_CREDENTIALS"));
        assert!(credential_variables("az://c/p").contains("AZURE_STORAGE_ACCOUNT_KEY"));
    }
}
