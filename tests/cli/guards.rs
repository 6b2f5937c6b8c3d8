//! What a run must never take for what it expects: an input that changes
//! while it is read, a mistyped lake, a secret in a job file, a state folder
//! of another lake; and what it leaves visible: `msgext runs` lists a lake's
//! runs and drops an unfinished one. Each runs the real binary against the
//! simulator on 127.0.0.1:0 and reads the lake back with the Parquet reader.

use crate::common::{export_args, run_msgext, show};
use msgext::mock::store::{Store, StoredMessage};
use msgext::mock::{DEMO_SECRET_KEY, Faults, MockServer};
use msgext::model::MessageRef;
use std::path::{Path, PathBuf};

fn messages(n: usize, tag: &str) -> Vec<MessageRef> {
    (0..n)
        .map(|i| {
            MessageRef::new(
                Some("sender"),
                &format!("to_{tag}_{i:05}"),
                &format!("{i}_{tag}_1700000000"),
            )
        })
        .collect()
}

async fn serve(msgs: &[MessageRef], faults: Faults) -> (Store, MockServer) {
    let store = Store::generate(msgs, 3, 0);
    let server = crate::common::start_mock(store.clone(), faults, 7).await;
    (store, server)
}

/// The simulator holding `n` messages, and a temporary folder with their
/// list in `in.csv`.
async fn fixture(n: usize, tag: &str) -> (Store, MockServer, tempfile::TempDir, PathBuf) {
    let msgs = messages(n, tag);
    let (store, server) = serve(&msgs, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, crate::common::input_csv(&msgs)).unwrap();
    (store, server, dir, input)
}

/// `msgext export` without `--run-id`: the command cron runs.
fn plain_args(server: &MockServer, input: &Path, out: &Path) -> Vec<String> {
    let mut a = export_args(&server.url(), input, out, "parquet", "x", 8);
    let at = a.iter().position(|s| s == "--run-id").unwrap();
    a.drain(at..at + 2);
    a
}

fn stored<'a>(store: &'a Store, msgs: &[MessageRef]) -> Vec<&'a StoredMessage> {
    store
        .messages
        .iter()
        .filter(|m| msgs.contains(crate::common::one_to_one(&m.id)))
        .collect()
}

/// The input truncated mid-run (what `query > messages.csv` does first):
/// the run fails naming the file and "changed while it was read", with no
/// `_SUCCESS`; with the content restored, the same command finishes the run
/// and the lake holds exactly the simulator's data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_truncated_mid_run_fails_the_run_and_resumes_only_with_its_content() {
    let msgs = messages(8000, "t");
    let (store, server) = serve(
        &msgs,
        Faults {
            latency_ms: 2,
            ..Faults::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.csv"), dir.path().join("lake"));
    let content = crate::common::input_csv(&msgs);
    assert!(content.len() > 4 * msgext::input::BLOCK, "several blocks");
    std::fs::write(&input, &content).unwrap();
    let args = export_args(&server.url(), &input, &out, "parquet", "r1", 4);
    let child = crate::common::msgext_command(&args, DEMO_SECRET_KEY, &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::common::wait_for_answers(server.stats(), 200).await;
    std::fs::write(
        &input,
        "From_Account,To_Account,MsgKey\nsender,someone,1_2_3\n",
    )
    .unwrap();
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let text = show(&o);
    assert!(
        text.contains(&format!("{}: changed while it was read", input.display())),
        "{text}"
    );
    assert!(!out.join("_runs/r1/_SUCCESS").exists());
    assert!(
        crate::common::kv_from_parquet(&out).len()
            < crate::common::expected_rows(&store.messages).len(),
        "stopped early"
    );
    // Resumable only with the same content.
    let o = run_msgext(args.clone(), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(show(&o).contains("the input differs"), "{}", show(&o));
    std::fs::write(&input, &content).unwrap();
    let mut again = args;
    let c = again.iter().position(|a| a == "--concurrency").unwrap();
    again[c + 1] = "32".into();
    let o = run_msgext(again, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        crate::common::kv_from_parquet(&out),
        crate::common::expected_rows(&store.messages)
    );
    assert!(out.join("_runs/r1/_SUCCESS").exists());
}

/// Mistyped bucket URLs and a header of two kinds are usage errors (exit 2)
/// that create nothing, not a folder called `s3:` in the working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_lake_or_a_mixed_header_is_refused_and_creates_nothing() {
    let (_store, server, dir, input) = fixture(3, "m").await;
    let cwd = dir.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let table = [
        ("s3:/lake/nightly", "did you mean s3://lake/nightly?"),
        ("s3:lake/x", "did you mean s3://lake/x?"),
        ("gs:/b/x", "did you mean gs://b/x?"),
        ("az:/c/x", "did you mean az://c/x?"),
        ("s3://lake//x", "did you mean s3://lake/x?"),
        ("s3://lake/x?versionId=1", "no ?query or #fragment"),
        ("s3://lake/x#part", "no ?query or #fragment"),
    ];
    for (out, want) in table {
        let args = export_args(&server.url(), &input, Path::new(out), "parquet", "x", 2);
        let o = crate::common::msgext_command(&args, DEMO_SECRET_KEY, &[])
            .current_dir(&cwd)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{out}: {}", show(&o));
        assert!(show(&o).contains(want), "{out}: {}", show(&o));
        assert_eq!(
            std::fs::read_dir(&cwd).unwrap().count(),
            0,
            "{out}: nothing created"
        );
    }
    let mixed = dir.path().join("mixed.csv");
    std::fs::write(
        &mixed,
        "From_Account,To_Account,MsgKey,GroupId,MsgSeq\na,b,1,g,2\n",
    )
    .unwrap();
    let o = run_msgext(
        export_args(&server.url(), &mixed, &cwd.join("lake"), "parquet", "x", 2),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        show(&o).contains("one-to-one (To_Account, MsgKey) and group (GroupId, MsgSeq)"),
        "{}",
        show(&o)
    );
    assert_eq!(server.stats().calls(), 0);
}

/// The secret key typed into a job file's `identifier` (which would go
/// into every call's URL) is refused by line and key, never printed, before
/// any call; so is one typed where a region goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_key_in_a_job_file_is_refused_by_line_and_key_before_any_call() {
    let (_store, server, dir, input) = fixture(3, "s").await;
    let secret = "Zq9-the-apps-own-secret-key";
    let endpoint = format!("endpoint = \"{}\"\n", server.url());
    let table = [
        (
            format!("sdkappid = 1400000000\nidentifier = \"{secret}\"\n{endpoint}"),
            "line 2, key identifier: holds a secret key",
        ),
        (
            format!("sdkappid = 1400000000\nregion = \"{secret}\"\n"),
            "line 2, key region: not one of china",
        ),
    ];
    for (text, want) in table {
        let job = dir.path().join("job.toml");
        std::fs::write(&job, text).unwrap();
        let args: Vec<String> = [
            "export",
            "--job",
            &job.to_string_lossy(),
            "--input",
            &input.to_string_lossy(),
            "--out",
            &dir.path().join("lake").to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = run_msgext(args, secret, &[]).await;
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        assert!(show(&o).contains(want), "{want}: {}", show(&o));
        assert!(
            !show(&o).contains(&secret[..12]),
            "the secret leaked: {}",
            show(&o)
        );
    }
    assert_eq!(server.stats().calls(), 0);
}

/// A state folder holds runs of one lake each: resuming a run into another
/// `--out` is exit 2 before any call, naming both lakes, and leaves no
/// `_CLAIM` in the other lake; the plain command does not pick that run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_another_lake_in_the_state_folder_is_refused_naming_both() {
    let (store, server, dir, input) = fixture(60, "l").await;
    let state = dir.path().join("state");
    let (lake_a, lake_b) = (dir.path().join("lake-a"), dir.path().join("lake-b"));
    let with_state = |mut a: Vec<String>| {
        a.extend(["--state-dir".into(), state.to_string_lossy().into_owned()]);
        a
    };
    let args = |out: &Path| with_state(export_args(&server.url(), &input, out, "parquet", "r1", 4));
    let o = run_msgext(
        args(&lake_a),
        DEMO_SECRET_KEY,
        &[("MSGEXT_FAILPOINT", "settled:20")],
    )
    .await;
    assert_eq!(o.status.code(), None, "killed: {}", show(&o));
    let calls = server.stats().calls();
    let o = run_msgext(args(&lake_b), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let text = show(&o);
    assert!(
        text.contains(&format!(
            "it writes to another lake (then {}, now {})",
            lake_a.display(),
            lake_b.display()
        )),
        "{text}"
    );
    assert_eq!(server.stats().calls(), calls, "no API call");
    assert!(!lake_b.join("_runs/r1/_CLAIM").exists());
    // The plain command into lake B starts a run of its own.
    let o = run_msgext(
        with_state(plain_args(&server, &input, &lake_b)),
        DEMO_SECRET_KEY,
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(!lake_b.join("_runs/r1").exists());
    assert_eq!(
        crate::common::kv_from_parquet(&lake_b),
        crate::common::expected_rows(&store.messages)
    );
    // And run r1 still resumes into lake A, exactly.
    let o = run_msgext(args(&lake_a), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        crate::common::kv_from_parquet(&lake_a),
        crate::common::expected_rows(&store.messages)
    );
}

fn runs_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec!["runs".into()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    a
}

/// The run ids of `msgext runs` with their status.
async fn listed(out: &Path) -> Vec<(String, String)> {
    let o = run_msgext(runs_args(out, &[]), "", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_owned(), w.next().unwrap().to_owned())
        })
        .collect()
}

/// Killed, then the input edited: the plain command starts a new run and
/// says in one line that the lake holds an unfinished run it does not
/// resume; `msgext runs` lists both, `runs drop` removes the unfinished
/// one's files so that the lake holds exactly the finished run; a finished
/// run, an unknown one and one whose lock is held are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_runs_are_listed_and_dropped() {
    let first = messages(80, "a");
    let mut second = first.clone();
    second[0] = MessageRef::new(Some("sender"), "edited", "1_edited_1700000000");
    let mut all = first.clone();
    all.push(second[0].clone());
    let (store, server) = serve(&all, Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.csv"), dir.path().join("lake"));
    std::fs::write(&input, crate::common::input_csv(&first)).unwrap();
    let mut small_files = plain_args(&server, &input, &out);
    small_files.extend(["--max-file-mb".into(), "0.002".into()]);
    let o = run_msgext(
        small_files,
        DEMO_SECRET_KEY,
        &[("MSGEXT_FAILPOINT", "settled:40")],
    )
    .await;
    assert_eq!(o.status.code(), None, "killed: {}", show(&o));
    let runs = listed(&out).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (old, status) = runs[0].clone();
    assert_eq!(status, "unfinished");

    std::fs::write(&input, crate::common::input_csv(&second)).unwrap();
    let o = run_msgext(plain_args(&server, &input, &out), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let text = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        text.contains(&format!(
            "holds 1 unfinished run(s) that this run does not resume ({old})"
        )) && text.contains(&format!("msgext runs drop {old} --out")),
        "{text}"
    );
    let runs = listed(&out).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.contains(&(old.clone(), "unfinished".into())),
        "{runs:?}"
    );
    let new = runs.iter().find(|r| r.0 != old).unwrap().0.clone();
    assert!(runs.contains(&(new.clone(), "complete".into())), "{runs:?}");

    // A lock held on the state folder by an export of the old run: refused.
    let state = out.join("_runs");
    let holder = msgext::ledger::Holder {
        run_id: old.clone(),
        pid: std::process::id(),
        started_at: "now".into(),
    };
    let lock = msgext::ledger::RunLock::acquire(&state, &holder).unwrap();
    assert!(
        listed(&out)
            .await
            .contains(&(old.clone(), "running".into()))
    );
    let o = run_msgext(runs_args(&out, &["drop", &old]), "", &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(show(&o).contains("in use by run"), "{}", show(&o));
    drop(lock);

    for (run, want) in [
        (new.as_str(), "only unfinished runs are dropped"),
        ("r-nope", "no run r-nope"),
    ] {
        let o = run_msgext(runs_args(&out, &["drop", run]), "", &[]).await;
        assert_eq!(o.status.code(), Some(2), "{}", show(&o));
        assert!(show(&o).contains(want), "{}", show(&o));
    }
    let of_old = |out: &Path| {
        crate::common::files(out, "parquet")
            .iter()
            .filter(|f| f.to_string_lossy().contains(&format!("run_id={old}")))
            .count()
    };
    assert!(of_old(&out) > 0, "the killed run left data files");
    let before: Vec<_> = crate::common::kv_from_parquet(&out);
    let o = run_msgext(runs_args(&out, &["drop", &old]), "", &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(listed(&out).await, vec![(new, "complete".into())]);
    let after = crate::common::kv_from_parquet(&out);
    assert!(after.len() < before.len());
    assert_eq!(after, crate::common::expected_rows(stored(&store, &second)));
    assert!(!out.join("_runs").join(&old).exists());
    assert_eq!(of_old(&out), 0, "no file of the dropped run");
}

/// What a new user meets first: an endpoint where nothing listens fails
/// the run on its first call, saying nothing answered, and publishes no
/// data file; an output or state folder that cannot be written names the
/// folder and the setting that chooses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_mistakes_are_told_plainly_and_leave_no_data_file() {
    let msgs = messages(5, "n");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, crate::common::input_csv(&msgs)).unwrap();
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nobody = format!("http://127.0.0.1:{port}");
    let out = dir.path().join("lake");
    let mut args = export_args(&nobody, &input, &out, "parquet", "r1", 2);
    let o = run_msgext(args.clone(), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        show(&o).contains(&format!("nothing answered at {nobody}")),
        "{}",
        show(&o)
    );
    assert_eq!(
        crate::common::files(&out, "parquet"),
        Vec::<std::path::PathBuf>::new(),
        "no data file without rows"
    );

    // A lake or a state folder where a file stands in the way.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let at = args.iter().position(|a| a == "--out").unwrap();
    args[at + 1] = file.join("lake").to_string_lossy().into_owned();
    let o = run_msgext(args.clone(), DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        show(&o).contains(&format!(
            "cannot write the output folder {}",
            file.join("lake").display()
        )) && show(&o).contains("with --out"),
        "{}",
        show(&o)
    );
    args[at + 1] = out.to_string_lossy().into_owned();
    args.extend([
        "--state-dir".into(),
        file.join("state").to_string_lossy().into_owned(),
    ]);
    let o = run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        show(&o).contains(&format!(
            "cannot write the state folder (lock, run.json, write-ahead log) {}",
            file.join("state").display()
        )) && show(&o).contains("with --state-dir"),
        "{}",
        show(&o)
    );
}
