//! The lake on object storage, against a real S3 implementation: `s3s` with
//! its file-system backend, served in-process on 127.0.0.1:0 (it checks
//! SigV4 signatures, serves multipart uploads and conditional PUTs). The
//! exports run as the real binary, configured the way users configure it
//! (`AWS_*` variables); what they leave is read back through the S3 protocol.

use crate::common::{export_args, run_msgext, show};
use crate::s3server::{KEY_ID, S3Server, SECRET, refs};
use msgext::mock::store::Store;
use msgext::mock::{DEMO_SECRET_KEY, Faults, MockServer};
use msgext::model::MessageRef;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const BUCKET: &str = "lake-bucket";
const RUN: &str = "nightly";

/// The S3 server, with the client side of the tests.
struct S3(S3Server);

impl std::ops::Deref for S3 {
    type Target = S3Server;
    fn deref(&self) -> &S3Server {
        &self.0
    }
}

async fn start_s3(root: &Path) -> S3 {
    S3(S3Server::start(root, &[BUCKET]).await)
}

impl S3 {
    fn client(&self) -> object_store::aws::AmazonS3 {
        AmazonS3Builder::new()
            .with_endpoint(&self.url)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_region("us-east-1")
            .build()
            .unwrap()
    }

    /// The `key_values` rows of the lake at `prefix`, read by the Delta
    /// kernel's scan through the S3 protocol.
    fn kv_through_log(&self, prefix: &str) -> Vec<crate::common::KvRow> {
        self.rows_through_log(prefix, "key_values")
    }

    /// The rows of a pairs table (`key_values`, `current_key_values`) of
    /// the bucket's lake, through its Delta log.
    fn rows_through_log(&self, prefix: &str, table: &str) -> Vec<crate::common::KvRow> {
        let url = format!("s3://{BUCKET}/{prefix}/{table}/");
        let mut rows: Vec<crate::common::KvRow> =
            crate::common::delta_batches(std::sync::Arc::new(self.client()), &url)
                .iter()
                .flat_map(crate::common::kv_rows_of)
                .collect();
        rows.sort();
        rows
    }

    /// Every key under `prefix`, listed through the S3 protocol.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let store = self.client();
        let mut keys = Vec::new();
        let mut todo = vec![Key::from(prefix)];
        while let Some(p) = todo.pop() {
            let listed = store.list_with_delimiter(Some(&p)).await.unwrap();
            keys.extend(listed.objects.into_iter().map(|o| o.location.to_string()));
            todo.extend(listed.common_prefixes);
        }
        keys.sort();
        keys
    }

    /// Download everything under `prefix` into `to`, through the S3 protocol.
    async fn download(&self, prefix: &str, to: &Path) -> Vec<String> {
        let store = self.client();
        let keys = self.keys(prefix).await;
        let mut rels = Vec::new();
        for k in &keys {
            let rel = k.strip_prefix(&format!("{prefix}/")).unwrap().to_owned();
            let bytes = store
                .get(&Key::from(k.as_str()))
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let path = to.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
            rels.push(rel);
        }
        rels
    }

    /// The ids of multipart uploads begun and neither completed nor aborted:
    /// s3s-fs keeps `.upload-<id>.json` and `.upload_id-<id>.part-<n>` at
    /// its root while an upload is open.
    fn open_uploads(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.root)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let id = match name.strip_prefix(".upload_id-") {
                    Some(rest) => rest.split(".part-").next(),
                    None => name
                        .strip_prefix(".upload-")
                        .and_then(|r| r.strip_suffix(".json")),
                };
                id.map(str::to_owned)
            })
            .collect()
    }

    /// Clear uploads from the server's disk, as a lifecycle rule
    /// (AbortIncompleteMultipartUpload) would.
    fn clear_uploads(&self, ids: &BTreeSet<String>) {
        for e in std::fs::read_dir(&self.root).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ids.iter().any(|id| name.contains(id.as_str())) {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

struct Setup {
    /// `--max-file-mb`.
    max_file_mb: &'static str,
    store: Store,
    server: MockServer,
    s3: S3,
    dir: tempfile::TempDir,
    input: PathBuf,
}

/// `n` messages; with `value_bytes`, every value is that long and random
/// (about 13 MB for 240 messages), so that part files pass S3's 5 MiB
/// minimum part size and go up in several parts.
async fn setup(n: usize, value_bytes: usize) -> Setup {
    let msgs: Vec<MessageRef> = (0..n)
        .map(|i| MessageRef::new(Some("snd"), &format!("to{i}"), &format!("{i}_7_7")))
        .collect();
    let mut store = Store::generate(&msgs, 11, 0);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    for p in store.messages.iter_mut().flat_map(|m| m.pairs.iter_mut()) {
        if value_bytes > 0 {
            p.value = (0..value_bytes)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
                })
                .collect();
        }
    }
    let server = crate::common::start_mock(store.clone(), Faults::default(), 1).await;
    let dir = tempfile::tempdir().unwrap();
    let s3 = start_s3(&dir.path().join("s3")).await;
    let input = dir.path().join("in.csv");
    std::fs::write(&input, crate::common::input_csv(&msgs)).unwrap();
    Setup {
        max_file_mb: if value_bytes > 0 { "6" } else { "0.03" },
        store,
        server,
        s3,
        dir,
        input,
    }
}

impl Setup {
    /// `msgext export` into `s3://BUCKET/<prefix>`, state in `<state>`.
    fn args(&self, prefix: &str, state: &str, format: &str) -> Vec<String> {
        let mut a = export_args(
            &self.server.url(),
            &self.input,
            Path::new(&format!("s3://{BUCKET}/{prefix}")),
            format,
            RUN,
            8,
        );
        a.extend([
            "--max-file-mb".into(),
            self.max_file_mb.into(),
            "--state-dir".into(),
            self.dir.path().join(state).to_string_lossy().into_owned(),
        ]);
        a
    }

    async fn export(
        &self,
        prefix: &str,
        state: &str,
        extra_env: &[(&str, &str)],
    ) -> std::process::Output {
        self.export_with(prefix, state, SECRET, extra_env).await
    }

    async fn export_with(
        &self,
        prefix: &str,
        state: &str,
        secret: &'static str,
        extra_env: &[(&str, &str)],
    ) -> std::process::Output {
        let env = self.user_env(secret);
        let mut all = refs(&env);
        all.extend_from_slice(extra_env);
        run_msgext(self.args(prefix, state, "parquet"), DEMO_SECRET_KEY, &all).await
    }

    /// The server's environment, with parts of S3's minimum size rather than 8 MiB.
    fn user_env(&self, secret: &'static str) -> Vec<(&'static str, String)> {
        let mut env = self.s3.env(secret);
        env.push(("MSGEXT_TEST_PART_BYTES", "5242880".to_owned()));
        env
    }

    /// The bucket's `prefix` holds exactly the simulator's data, every file
    /// the manifest lists (rows, bytes, sha256) and nothing else, `_SUCCESS`
    /// last; no temporary object, no open multipart upload.
    async fn assert_exact(&self, prefix: &str) {
        let local = self.dir.path().join(format!("read-back-{prefix}"));
        let _ = std::fs::remove_dir_all(&local);
        let rels = self.s3.download(prefix, &local).await;
        let rows = crate::common::kv_from_parquet(&local);
        assert_eq!(
            rows,
            crate::common::expected_rows(&self.store.messages),
            "exactly the simulator's data, no row twice"
        );
        // What Delta readers see: the bucket's tables through their logs.
        let through_log = self.s3.kv_through_log(prefix);
        assert_eq!(
            rows, through_log,
            "the Delta log lists exactly the run's files"
        );
        crate::common::assert_run_committed_once(&local, RUN);
        let msgs = crate::common::messages_from_parquet(&local);
        assert_eq!(msgs.len(), self.store.messages.len());
        assert!(msgs.iter().all(|m| m.status == "ok"));
        let run = format!("_runs/{RUN}");
        for f in [
            "_SUCCESS",
            "_CLAIM",
            "summary.json",
            "manifest.json",
            "errors.csv",
        ] {
            assert!(rels.contains(&format!("{run}/{f}")), "{f} in {rels:?}");
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(local.join(&run).join("manifest.json")).unwrap())
                .unwrap();
        let mut listed: Vec<String> = Vec::new();
        for f in manifest["files"].as_array().unwrap() {
            use sha2::Digest;
            let rel = f["path"].as_str().unwrap();
            let bytes = std::fs::read(local.join(rel)).unwrap();
            assert_eq!(f["bytes"], bytes.len() as u64, "{rel}");
            let sha: String = sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(f["sha256"], sha, "{rel}");
            listed.push(rel.to_owned());
        }
        listed.sort();
        // The current tables' files are named by their Delta log (a run
        // replaces some of them), and so is what the run changed in them
        // (key_value_changes): the manifest lists the run's own tables.
        let data: Vec<String> = rels
            .iter()
            .filter(|r| !r.starts_with("_runs/") && !r.contains("/_delta_log/"))
            .filter(|r| !r.starts_with("current_"))
            // What the run changed in the current tables: written with them.
            .filter(|r| !r.starts_with("key_value_changes/"))
            .cloned()
            .collect();
        assert_eq!(
            data, listed,
            "the manifest names every object of the run's tables and only them"
        );
        assert!(
            data.iter().all(|r| {
                let name = r.rsplit('/').next().unwrap();
                name.starts_with("part-") && name.ends_with(".parquet")
            }),
            "nothing temporary under the tables: {data:?}"
        );
        assert!(listed.len() >= 4, "several files: {listed:?}");
        assert_eq!(self.s3.open_uploads(), BTreeSet::new(), "no open upload");
    }

    /// The multipart upload ids recorded in the state folder.
    fn recorded_uploads(&self, state: &str) -> BTreeSet<String> {
        self.staged(state)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "upload"))
            .map(|p| std::fs::read_to_string(p).unwrap().trim().to_owned())
            .collect()
    }

    /// Files still waiting in the state folder.
    fn staged(&self, state: &str) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir.path().join(state).join("_staging"), &mut out);
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_to_s3_reads_back_exactly_from_the_bucket() {
    let s = setup(240, 1000).await;
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&s.dir.path().join("state").display().to_string()),
        "the state folder is printed: {stderr}"
    );
    s.assert_exact("lake").await;
    // Large files went up in parts (of 5 MiB here), small ones in one PUT.
    let summary: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            s.dir
                .path()
                .join("read-back-lake/_runs/nightly/summary.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let sizes: Vec<u64> = summary["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["bytes"].as_u64().unwrap())
        .collect();
    assert!(sizes.iter().any(|&b| b > 5 << 20), "{sizes:?}");
    assert!(sizes.iter().any(|&b| b < 5 << 20), "{sizes:?}");
    assert_eq!(summary["out"], format!("s3://{BUCKET}/lake"));
    assert!(s.staged("state").is_empty(), "{:?}", s.staged("state"));
    // Done is done: the same command is refused, as for a folder.
    let again = s.export("lake", "state", &[]).await;
    assert_eq!(again.status.code(), Some(2), "{}", show(&again));
    assert!(
        show(&again).contains("already completed"),
        "{}",
        show(&again)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_each_commit_stage_then_the_same_command_gives_the_exact_lake() {
    let s = setup(240, 1000).await;
    // After a part file is sealed, after the ledger commits it, in the middle
    // of its multipart upload, after the upload completed (before its record
    // is removed), after it is published, between the two tables' Delta
    // commits, after them (before the reports), before _SUCCESS.
    let stages = [
        "sealed:2",
        "committed:2",
        "uploaded_part:1",
        "completed_upload",
        "published:1",
        "between_delta_commits",
        "after_delta_commits",
        "before_success",
    ];
    for (i, stage) in stages.into_iter().enumerate() {
        let (prefix, state) = (format!("lake{i}"), format!("state{i}"));
        let o = s
            .export(&prefix, &state, &[("MSGEXT_FAILPOINT", stage)])
            .await;
        assert_eq!(o.status.code(), None, "{stage}: killed: {}", show(&o));
        // Whatever is at a final key is whole.
        let partial = s.dir.path().join(format!("partial-{i}"));
        for rel in s.s3.download(&prefix, &partial).await {
            if rel.ends_with(".parquet") {
                crate::common::parquet_batches(&partial.join(rel));
            }
        }
        let recorded = s.recorded_uploads(&state);
        let open = s.s3.open_uploads();
        if stage == "uploaded_part:1" {
            assert!(
                !recorded.is_disjoint(&open),
                "the crash left a recorded upload open: {recorded:?}, {open:?}"
            );
        }
        let o = s.export(&prefix, &state, &[]).await;
        assert_eq!(o.status.code(), Some(0), "{stage}: resumed: {}", show(&o));
        // The resume aborted every upload the crash left recorded. What may
        // stay open is an upload the store created as the kill came, before
        // msgext recorded its id (one per upload in flight, at most 2):
        // nothing finds those but a lifecycle rule (see the README).
        let left = s.s3.open_uploads();
        assert!(
            left.is_disjoint(&recorded) && left.len() <= 2,
            "{stage}: open after the resume {left:?}; recorded {recorded:?}; open before {open:?}"
        );
        s.s3.clear_uploads(&left);
        s.assert_exact(&prefix).await;
        assert!(
            s.staged(&state).is_empty(),
            "{stage}: {:?}",
            s.staged(&state)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_id_claimed_by_another_export_is_refused() {
    let s = setup(120, 0).await;
    // Machine A starts the run and dies.
    let o = s
        .export("lake", "state-a", &[("MSGEXT_FAILPOINT", "settled:20")])
        .await;
    assert_eq!(o.status.code(), None, "{}", show(&o));
    let calls = s.server.stats().calls();
    // Machine B (its own state folder) gives the same run id: refused before any call.
    let b = s.export("lake", "state-b", &[]).await;
    assert_eq!(b.status.code(), Some(2), "{}", show(&b));
    assert!(
        show(&b).contains("belongs to another export"),
        "{}",
        show(&b)
    );
    assert_eq!(s.server.stats().calls(), calls, "no API call");
    // A finishes it.
    let a = s.export("lake", "state-a", &[]).await;
    assert_eq!(a.status.code(), Some(0), "{}", show(&a));
    s.assert_exact("lake").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_at_once_with_a_clear_message_and_no_secret() {
    let s = setup(20, 0).await;
    let o = s
        .export_with("lake", "state", "not-the-secret-7c1d", &[])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = show(&o);
    assert!(text.contains("access denied"), "{text}");
    assert!(text.contains(&format!("s3://{BUCKET}/lake/")), "{text}");
    assert!(!text.contains("not-the-secret-7c1d"), "{text}");
    assert_eq!(s.server.stats().calls(), 0, "no API call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_that_does_not_exist_fails_at_once() {
    let s = setup(20, 0).await;
    let mut args = s.args("lake", "state", "csv");
    let at = args.iter().position(|a| a == "--out").unwrap() + 1;
    args[at] = "s3://no-such-bucket/lake".into();
    let o = run_msgext(args, DEMO_SECRET_KEY, &refs(&s.s3.env(SECRET))).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        show(&o).contains("the bucket does not exist"),
        "{}",
        show(&o)
    );
    assert_eq!(s.server.stats().calls(), 0, "no API call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_reached_fails_the_run_at_once_naming_it() {
    let s = setup(20, 0).await;
    // A port nobody listens on: object_store's retries of a refused
    // connection end in seconds (a black-holed one would take its 3 minutes).
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut env = s.s3.env(SECRET);
    for (k, v) in env.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = closed.clone();
        }
    }
    let o = run_msgext(
        s.args("lake", "state", "parquet"),
        DEMO_SECRET_KEY,
        &refs(&env),
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = show(&o);
    assert!(text.contains(&format!("s3://{BUCKET}/lake/")), "{text}");
    assert!(text.contains("error sending request"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(
        s.server.stats().calls(),
        0,
        "no API call before the store answers"
    );
}

/// GCS and Azure go through the same seam; with no server of theirs here,
/// check that their URLs reach their clients' configuration and that a
/// missing credential ends the run at once, naming the URL and the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gs_and_az_urls_reach_their_stores_and_a_missing_credential_is_told() {
    let s = setup(5, 0).await;
    let cases = [
        (
            "gs://bucket/lake",
            ("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json"),
            "/nonexistent/key.json",
        ),
        // No AZURE_STORAGE_ACCOUNT_NAME: told before any request (an empty
        // one would send the client to the instance metadata service).
        (
            "az://container/lake",
            ("MSGEXT_NOTHING", ""),
            "Account must be specified",
        ),
    ];
    for (url, env, cause) in cases {
        let mut args = s.args("lake", "state", "csv");
        let at = args.iter().position(|a| a == "--out").unwrap() + 1;
        args[at] = url.into();
        let o = run_msgext(args, DEMO_SECRET_KEY, &[env]).await;
        assert_eq!(o.status.code(), Some(1), "{url}: {}", show(&o));
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            stderr.contains(url) && stderr.contains(cause),
            "{url}: {stderr}"
        );
    }
    assert_eq!(s.server.stats().calls(), 0, "no API call");
}

/// A real SIGKILL at a moment the test does not choose (after 150 answers,
/// wherever the writer and the uploads are), then the same command.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_kill_9_mid_export_then_the_same_command_gives_the_exact_lake() {
    let s = setup(240, 1000).await;
    let env = s.user_env(SECRET);
    let cmd = crate::common::msgext_command(
        &s.args("lake", "state", "parquet"),
        DEMO_SECRET_KEY,
        &refs(&env),
    );
    let status = crate::common::signal_midway(cmd, s.server.stats(), 150, "-KILL").await;
    assert_eq!(status.code(), None, "killed");
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    s.assert_exact("lake").await;
}

/// An upload the store refuses (here: parts under S3's 5 MiB minimum, which
/// the server answers with EntityTooSmall when the upload is completed)
/// fails the run at once with the store's words, and no `_SUCCESS`; the
/// committed file is still staged, so the same command with a working
/// store gives the exact lake, with no upload left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_store_refuses_fails_the_run_and_the_same_command_recovers() {
    let s = setup(240, 1000).await;
    let o = s
        .export("lake", "state", &[("MSGEXT_TEST_PART_BYTES", "1048576")])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(show(&o).contains("EntityTooSmall"), "{}", show(&o));
    assert!(
        show(&o).contains(&format!("s3://{BUCKET}/lake/")),
        "{}",
        show(&o)
    );
    let keys = s.s3.keys("lake").await;
    assert!(
        !keys.iter().any(|k| k.ends_with("_SUCCESS")),
        "no _SUCCESS over a lost file: {keys:?}"
    );
    assert!(
        !s.staged("state").is_empty(),
        "the refused file waits, staged"
    );
    // msgext aborts the refused upload. s3s-fs forgets an upload's id before
    // it checks the part sizes, so the abort is answered AccessDenied and
    // the parts stay on its disk (real S3 keeps the upload until aborted):
    // check that the abort was tried, then clear what the server leaked.
    assert!(
        show(&o).contains("could not abort the multipart upload"),
        "{}",
        show(&o)
    );
    s.s3.clear_uploads(&s.s3.open_uploads());
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    s.assert_exact("lake").await;
    assert!(s.staged("state").is_empty(), "{:?}", s.staged("state"));
}

/// A TCP relay in front of the S3 server that goes silent the way a store
/// behind a dead link does: from the first request whose bytes hold
/// `trigger` on, it still takes connections and bytes but passes nothing
/// on and answers nothing, on new connections and on pooled ones alike.
struct SilentRelay {
    url: String,
    /// Told once, when the relay goes silent.
    went_silent: std::sync::Arc<tokio::sync::Notify>,
}

impl SilentRelay {
    /// Wait until the relay has gone silent (guarded against a run that never gets there).
    async fn wait_silent(&self) {
        tokio::time::timeout(crate::common::RUN_GUARD, self.went_silent.notified())
            .await
            .expect("the store never went silent");
    }
}

async fn silent_relay(upstream: &str, trigger: &'static [u8]) -> SilentRelay {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    /// Copy `from` to `to` until the relay goes silent (or `trigger` passes,
    /// which makes it silent); then read on and pass nothing.
    async fn pipe(
        mut from: impl AsyncRead + Unpin,
        mut to: impl AsyncWrite + Unpin,
        silent: std::sync::Arc<AtomicBool>,
        went_silent: std::sync::Arc<tokio::sync::Notify>,
        trigger: Option<&[u8]>,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                return;
            }
            if trigger.is_some_and(|t| buf[..n].windows(t.len()).any(|w| w == t))
                && !silent.swap(true, Ordering::SeqCst)
            {
                went_silent.notify_one();
            }
            if !silent.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let upstream = upstream.trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let silent = std::sync::Arc::new(AtomicBool::new(false));
    let went_silent = std::sync::Arc::new(tokio::sync::Notify::new());
    let (flag, told) = (silent.clone(), went_silent.clone());
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pipe(cr, sw, flag.clone(), told.clone(), Some(trigger)));
            tokio::spawn(pipe(sr, cw, flag.clone(), told.clone(), None));
        }
    });
    SilentRelay { url, went_silent }
}

/// A store that stops answering in the middle of the run (its first upload
/// of a data file is never answered, nor anything after it) fails the run
/// within `--store-timeout`, naming the store, the cause and the setting,
/// with no `_SUCCESS`; the committed files wait, staged, and the same
/// command once the store is back gives the exact lake. (Before the
/// setting, each attempt waited object_store's 30 s and retries went on
/// for 3 minutes: the run outlived the tests' guard.)
/// The environment of `s` with the store behind `relay`.
fn env_through(s: &Setup, relay: &SilentRelay) -> Vec<(&'static str, String)> {
    let mut env = s.user_env(SECRET);
    for (k, v) in env.iter_mut() {
        if *k == "AWS_ENDPOINT_URL" {
            *v = relay.url.clone();
        }
    }
    env
}

/// Start the binary in the background, its output piped.
fn spawn(args: &[String], env: &[(&str, &str)]) -> std::process::Child {
    crate::common::msgext_command(args, DEMO_SECRET_KEY, env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for a spawned binary, guarded against a hang.
async fn wait(child: std::process::Child) -> std::process::Output {
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    tokio::time::timeout(crate::common::RUN_GUARD, waited)
        .await
        .expect("msgext still running after the guard: it hangs")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_answering_fails_the_run_within_the_store_timeout() {
    let s = setup(40, 0).await;
    let relay = silent_relay(&s.s3.url, b"key_values/").await;
    let env = env_through(&s, &relay);
    let mut args = s.args("lake", "state", "parquet");
    args.extend(["--store-timeout".into(), "6".into()]);
    let child = spawn(&args, &refs(&env));
    relay.wait_silent().await;
    let silent_at = std::time::Instant::now();
    let o = wait(child).await;
    let took = silent_at.elapsed();
    eprintln!("the run ended {took:?} after the store went silent (--store-timeout 6)");
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = show(&o);
    assert!(text.contains(&format!("s3://{BUCKET}/lake/")), "{text}");
    assert!(text.contains("--store-timeout 6 s"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    // Within 1.5 times the setting from the moment the store went silent:
    // one deadline for the request, no second request (an abort, a report)
    // waiting as long again. object_store alone took 2-2.5 times.
    assert!(took < std::time::Duration::from_secs(9), "{took:?}");
    let keys = s.s3.keys("lake").await;
    assert!(
        !keys.iter().any(|k| k.ends_with("_SUCCESS")),
        "no _SUCCESS over a file that did not arrive: {keys:?}"
    );
    assert!(!s.staged("state").is_empty(), "the files wait, staged");
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    s.assert_exact("lake").await;
    assert!(s.staged("state").is_empty(), "{:?}", s.staged("state"));
}

/// SIGTERM while the store does not answer: the run ends with 130 within a
/// short grace, not after `--store-timeout` (here an hour, which the tests'
/// guard would end first), and the same command later gives the exact lake.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_store_stalls_exits_130_promptly() {
    let s = setup(40, 0).await;
    sigterm_while_stalled(&s, b"key_values/").await;
}

/// Stall the store at the first request holding `trigger`, send SIGTERM:
/// 130 with "interrupted", then the same command finishes the lake exact.
async fn sigterm_while_stalled(s: &Setup, trigger: &'static [u8]) {
    let relay = silent_relay(&s.s3.url, trigger).await;
    let env = env_through(s, &relay);
    let mut args = s.args("lake", "state", "parquet");
    args.extend(["--store-timeout".into(), "3600".into()]);
    let child = spawn(&args, &refs(&env));
    relay.wait_silent().await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let o = wait(child).await;
    assert_eq!(o.status.code(), Some(130), "{}", show(&o));
    assert!(show(&o).contains("interrupted"), "{}", show(&o));
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    s.assert_exact("lake").await;
}

/// SIGTERM while the upload of the current tables' files stalls: the run
/// ends at once with 130 (their commit is synchronous work; it must not
/// hold the thread that hears the signal), and the same command commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_current_tables_commit_stalls_exits_130_promptly() {
    let s = setup(40, 0).await;
    sigterm_while_stalled(&s, b"current_messages/sdkappid").await;
    assert_eq!(
        s.s3.rows_through_log("lake", "current_key_values"),
        crate::common::expected_rows(&s.store.messages),
        "the current table is a full read"
    );
}

/// A refused claim leaves nothing that a later run would resume: the plain
/// command of the refused state folder (no --run-id, as cron runs it)
/// starts a run of its own instead of being refused every night; the
/// message names the holder's host, pid and state folder and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_claim_leaves_nothing_behind_and_names_its_holder() {
    let s = setup(60, 0).await;
    let a = s
        .export("lake", "state-a", &[("MSGEXT_FAILPOINT", "settled:20")])
        .await;
    assert_eq!(a.status.code(), None, "{}", show(&a));
    let b = s.export("lake", "state-b", &[]).await;
    assert_eq!(b.status.code(), Some(2), "{}", show(&b));
    let text = show(&b);
    let state_a = s.dir.path().join("state-a").join(RUN);
    for want in [
        "belongs to another export".to_owned(),
        format!("state folder {}", state_a.display()),
        "pid ".to_owned(),
        format!("msgext runs drop {RUN} --out s3://{BUCKET}/lake"),
    ] {
        assert!(text.contains(&want), "{want}: {text}");
    }
    assert!(
        !s.dir.path().join("state-b").join(RUN).exists(),
        "nothing of the refused run in its state folder"
    );
    // The plain command from state-b: a run of its own, not run `nightly`.
    let mut plain = s.args("lake2", "state-b", "parquet");
    let at = plain.iter().position(|a| a == "--run-id").unwrap();
    plain.drain(at..at + 2);
    let env = s.user_env(SECRET);
    let o = run_msgext(plain, DEMO_SECRET_KEY, &refs(&env)).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
}

/// `msgext runs` on a bucket lists an unfinished run and a complete one;
/// `runs drop` removes the unfinished run's objects (and its staged files),
/// and refuses a complete run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_lists_and_drops_an_unfinished_run_in_a_bucket() {
    let s = setup(120, 0).await;
    let env = s.user_env(SECRET);
    let killed = s
        .export("lake", "state", &[("MSGEXT_FAILPOINT", "settled:60")])
        .await;
    assert_eq!(killed.status.code(), None, "{}", show(&killed));
    let runs = |extra: &[&str]| {
        let mut a: Vec<String> = vec!["runs".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend([
            "--out".into(),
            format!("s3://{BUCKET}/lake"),
            "--state-dir".into(),
            s.dir.path().join("state").to_string_lossy().into_owned(),
        ]);
        a
    };
    let o = run_msgext(runs(&[]), "", &refs(&env)).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = listed
        .lines()
        .find(|l| l.starts_with(RUN))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains(" unfinished "), "{listed}");
    assert!(
        line.contains(&s.dir.path().join("state").join(RUN).display().to_string()),
        "{listed}"
    );
    assert!(
        s.s3.keys("lake")
            .await
            .iter()
            .any(|k| k.contains("/run_id=nightly/")),
        "the killed run left data in the bucket"
    );
    let o = run_msgext(runs(&["drop", RUN]), "", &refs(&env)).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        s.s3.keys("lake").await,
        Vec::<String>::new(),
        "nothing of the run is left"
    );
    assert!(!s.dir.path().join("state").join(RUN).exists());
    assert!(s.staged("state").is_empty(), "{:?}", s.staged("state"));
    // The same command now exports the run from the start, exactly.
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    s.assert_exact("lake").await;
    let o = run_msgext(runs(&["drop", RUN]), "", &refs(&env)).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("only unfinished runs are dropped"),
        "{}",
        show(&o)
    );
    let o = run_msgext(runs(&[]), "", &refs(&env)).await;
    let listed = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(RUN) && l.contains(" complete ")),
        "{listed}"
    );
}

/// A plain-http S3 endpoint without AWS_ALLOW_HTTP names the setting,
/// rather than the client's bare "builder error", before any API call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_endpoint_without_aws_allow_http_names_the_setting() {
    let s = setup(5, 0).await;
    let env: Vec<(&'static str, String)> = s
        .user_env(SECRET)
        .into_iter()
        .filter(|(k, _)| *k != "AWS_ALLOW_HTTP")
        .collect();
    let o = run_msgext(
        s.args("lake", "state", "parquet"),
        DEMO_SECRET_KEY,
        &refs(&env),
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(show(&o).contains("set AWS_ALLOW_HTTP=true"), "{}", show(&o));
    assert!(!show(&o).contains("builder error"), "{}", show(&o));
    assert_eq!(s.server.stats().calls(), 0);
}

/// Two apps' nightly exports into the same bucket tables at the same time
/// (two machines: two state folders, two simulators with their own
/// SDKAppID): both runs land, each in one commit per table, the log's
/// versions without a gap, and the tables hold both apps' rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apps_exporting_at_once_both_land_in_the_shared_tables() {
    let s = setup(120, 0).await;
    const OTHER_APP: u64 = 1_400_000_077;
    let other = msgext::mock::MockServer::start(
        s.store.clone(),
        msgext::mock::MockConfig {
            sdkappid: OTHER_APP,
            ..msgext::mock::MockConfig::default()
        },
        ([127, 0, 0, 1], 0).into(),
    )
    .await
    .unwrap();
    let env = s.user_env(SECRET);
    let env = refs(&env);
    let mut first = s.args("shared", "state-a", "parquet");
    let mut second = s.args("shared", "state-b", "parquet");
    crate::common::set_arg(&mut first, "--run-id", "app-a");
    crate::common::set_arg(&mut second, "--run-id", "app-b");
    crate::common::set_arg(&mut second, "--sdkappid", &OTHER_APP.to_string());
    crate::common::set_arg(&mut second, "--endpoint", &other.url());
    let (a, b) = tokio::join!(
        run_msgext(first.clone(), DEMO_SECRET_KEY, &env),
        run_msgext(second.clone(), DEMO_SECRET_KEY, &env)
    );
    assert_eq!(a.status.code(), Some(0), "{}", show(&a));
    assert_eq!(b.status.code(), Some(0), "{}", show(&b));

    let local = s.dir.path().join("read-back-shared");
    s.s3.download("shared", &local).await;
    for run in ["app-a", "app-b"] {
        crate::common::assert_run_committed_once(&local, run);
    }
    for table in ["key_values", "messages"] {
        let versions: Vec<u64> = crate::common::delta_commits(&local.join(table))
            .iter()
            .map(|c| c.version)
            .collect();
        assert_eq!(versions, [0, 1], "{table}");
    }
    let mut want = crate::common::expected_rows(&s.store.messages);
    want.extend(want.clone());
    want.sort();
    assert_eq!(s.s3.kv_through_log("shared"), want, "both apps, each once");
    let url = format!("s3://{BUCKET}/shared/key_values/");
    let mut apps: Vec<i64> = crate::common::delta_batches(std::sync::Arc::new(s.s3.client()), &url)
        .iter()
        .flat_map(|b| {
            use arrow_array::cast::AsArray;
            let c = b
                .column_by_name("sdkappid")
                .unwrap()
                .as_primitive::<arrow_array::types::Int64Type>()
                .clone();
            c.values().to_vec()
        })
        .collect();
    apps.dedup();
    apps.sort();
    apps.dedup();
    assert_eq!(apps, [msgext::mock::DEMO_SDKAPPID as i64, OTHER_APP as i64]);

    // Each app's current state is in its own partition of the current
    // tables; both apps again at once replace their own rows (remove +
    // add) without touching the other's.
    let check_current = || {
        let url = format!("s3://{BUCKET}/shared/current_key_values/");
        let mut per_app: std::collections::BTreeMap<i64, Vec<crate::common::KvRow>> =
            Default::default();
        for b in crate::common::delta_batches(std::sync::Arc::new(s.s3.client()), &url) {
            use arrow_array::cast::AsArray;
            let apps = b
                .column_by_name("sdkappid")
                .unwrap()
                .as_primitive::<arrow_array::types::Int64Type>()
                .clone();
            for (i, row) in crate::common::kv_rows_of(&b).into_iter().enumerate() {
                per_app.entry(apps.value(i)).or_default().push(row);
            }
        }
        assert_eq!(per_app.len(), 2);
        for (app, mut rows) in per_app {
            rows.sort();
            assert_eq!(
                rows,
                crate::common::expected_rows(&s.store.messages),
                "app {app}"
            );
        }
    };
    check_current();
    for (args, run) in [(&mut first, "app-a2"), (&mut second, "app-b2")] {
        crate::common::set_arg(args, "--run-id", run);
        args.push("--full".into());
    }
    let (a, b) = tokio::join!(
        run_msgext(first, DEMO_SECRET_KEY, &env),
        run_msgext(second, DEMO_SECRET_KEY, &env)
    );
    assert_eq!(a.status.code(), Some(0), "{}", show(&a));
    assert_eq!(b.status.code(), Some(0), "{}", show(&b));
    check_current();
}

/// A store that refuses the log's conditional writes: the run ends at its
/// commit with exit 1 saying what the store lacks, with no `_SUCCESS` and
/// nothing in the log; once the store allows them, the same command commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_the_log_s_conditional_writes_fails_the_run_and_it_resumes() {
    let s = setup(60, 0).await;
    *s.s3.refuse_conditional.lock().unwrap() = Some("/_delta_log/".into());
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        show(&o).contains("does not create an object only if absent"),
        "{}",
        show(&o)
    );
    let keys = s.s3.keys("lake").await;
    assert!(!keys.iter().any(|k| k.ends_with("_SUCCESS")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("/_delta_log/")), "{keys:?}");
    *s.s3.refuse_conditional.lock().unwrap() = None;
    let o = s.export("lake", "state", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    s.assert_exact("lake").await;
}

/// Vacuum and verify on a bucket: after three nights (the current tables'
/// files replaced twice), `vacuum --retain 0h` removes the replaced objects
/// and old log entries, the tables read the same through their logs,
/// `verify` finds the bucket sound, and the next night works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_and_verify_a_bucket_lake() {
    let s = setup(60, 0).await;
    let env = s.user_env(SECRET);
    let env = refs(&env);
    for night in ["n1", "n2", "n3"] {
        let mut args = s.args("lake", "state", "parquet");
        crate::common::set_arg(&mut args, "--run-id", night);
        let o = run_msgext(args, DEMO_SECRET_KEY, &env).await;
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    }
    let before = bucket_keys(&s.s3).await;
    let current = s.s3.rows_through_log("lake", "current_key_values");
    let history = s.s3.kv_through_log("lake");
    let lake = format!("s3://{BUCKET}/lake");
    let state = s.dir.path().join("state").to_string_lossy().into_owned();
    let cmd = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["--out", lake.as_str(), "--state-dir", state.as_str()]
            .iter()
            .map(|x| x.to_string())
            .collect();
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let o = run_msgext(
        [vec!["verify".to_owned()], cmd(&[])].concat(),
        DEMO_SECRET_KEY,
        &env,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let vacuum = [
        vec!["vacuum".to_owned()],
        cmd(&["--retain", "0h", "--force"]),
    ]
    .concat();
    let o = run_msgext(vacuum, DEMO_SECRET_KEY, &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let summary: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(summary["files"].as_u64().unwrap() > 0, "{summary}");
    let data = |keys: &BTreeSet<String>| -> BTreeSet<String> {
        keys.iter()
            .filter(|k| !k.contains("/_delta_log/"))
            .cloned()
            .collect()
    };
    let (data_before, data_after) = (data(&before), data(&bucket_keys(&s.s3).await));
    let gone = data_before.difference(&data_after).count() as u64;
    assert!(data_after.is_subset(&data_before), "{data_after:?}");
    assert_eq!(gone, summary["files"].as_u64().unwrap(), "{summary}");
    assert_eq!(s.s3.rows_through_log("lake", "current_key_values"), current);
    assert_eq!(s.s3.kv_through_log("lake"), history);
    let o = run_msgext(
        [vec!["verify".to_owned()], cmd(&[])].concat(),
        DEMO_SECRET_KEY,
        &env,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let mut args = s.args("lake", "state", "parquet");
    crate::common::set_arg(&mut args, "--run-id", "n4");
    let o = run_msgext(args, DEMO_SECRET_KEY, &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(s.s3.rows_through_log("lake", "current_key_values"), current);
}

/// Every key below `lake` in the bucket.
async fn bucket_keys(s3: &S3) -> BTreeSet<String> {
    use futures_util::TryStreamExt;
    let listed: Vec<object_store::ObjectMeta> = s3
        .client()
        .list(Some(&Key::from("lake")))
        .try_collect()
        .await
        .unwrap();
    listed.into_iter().map(|o| o.location.to_string()).collect()
}

/// A bucket whose policy refuses deletes in one table: vacuum fails that
/// table (exit 1, naming the object), finishes the others, and every table
/// still reads as before; with the refusal lifted the same command finishes
/// the work and the table holds only its live files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_refusing_a_delete_fails_that_table_and_the_next_vacuum_finishes() {
    let s = setup(40, 0).await;
    let env = s.user_env(SECRET);
    let env = refs(&env);
    // The second night reads in full: the current tables' files are replaced.
    for night in ["n1", "n2"] {
        let mut args = s.args("lake", "state", "parquet");
        crate::common::set_arg(&mut args, "--run-id", night);
        if night == "n2" {
            args.push("--full".into());
        }
        let o = run_msgext(args, DEMO_SECRET_KEY, &env).await;
        assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    }
    let current = s.s3.rows_through_log("lake", "current_key_values");
    let history = s.s3.kv_through_log("lake");
    let table = s.s3.root.join(BUCKET).join("lake/current_key_values");
    let data_keys = |keys: BTreeSet<String>| -> BTreeSet<String> {
        keys.into_iter()
            .filter(|k| k.starts_with("lake/current_key_values/") && !k.contains("/_delta_log/"))
            .collect()
    };
    let before = data_keys(bucket_keys(&s.s3).await);
    assert!(before.len() > crate::common::live_files(&table).len());
    let vacuum = vec![
        "vacuum".to_owned(),
        "--out".to_owned(),
        format!("s3://{BUCKET}/lake"),
        "--retain".to_owned(),
        "0h".to_owned(),
        "--force".to_owned(),
    ];
    *s.s3.refuse_delete.lock().unwrap() = Some("lake/current_key_values/".into());
    let o = run_msgext(vacuum.clone(), DEMO_SECRET_KEY, &env).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let named = format!("s3://{BUCKET}/lake/current_key_values/");
    assert!(show(&o).contains(&named), "{}", show(&o));
    assert!(show(&o).contains("access denied"), "{}", show(&o));
    assert_eq!(data_keys(bucket_keys(&s.s3).await), before);
    assert_eq!(s.s3.rows_through_log("lake", "current_key_values"), current);
    assert_eq!(s.s3.kv_through_log("lake"), history);
    *s.s3.refuse_delete.lock().unwrap() = None;
    let o = run_msgext(vacuum, DEMO_SECRET_KEY, &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let live: BTreeSet<String> = crate::common::live_files(&table)
        .into_keys()
        .map(|f| format!("lake/current_key_values/{f}"))
        .collect();
    assert_eq!(data_keys(bucket_keys(&s.s3).await), live);
    assert_eq!(s.s3.rows_through_log("lake", "current_key_values"), current);
    assert_eq!(s.s3.kv_through_log("lake"), history);
}
