//! End to end: the real `msgext` binary against the simulator on port 0 with
//! random 10002 answers. What lands in the lake, read back with the
//! arrow/parquet and csv readers, must be exactly the simulator's pairs;
//! errors.csv must list exactly the messages not exported and the invalid
//! rows; the exit code must say so.

use crate::common::{KvRow, MsgRow};
use msgext::mock::store::{Store, StoredMessage, StoredPair};
use msgext::mock::{DEMO_SECRET_KEY, Faults, MockServer};
use msgext::model::MessageRef;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The store, the input CSV, and the lines at which each invalid row sits.
struct Fixture {
    store: Store,
    input: String,
    /// Messages of the input the store does not hold: (To, MsgKey, line).
    missing: Vec<(String, String, u64)>,
    /// Invalid rows: (To, MsgKey, line).
    invalid: Vec<(String, String, u64)>,
    distinct: usize,
}

fn fixture(with_trouble: bool) -> Fixture {
    let refs: Vec<MessageRef> = (0..240)
        .map(|i| {
            let from = format!("sender_{}", i % 13);
            MessageRef::new(
                if i % 7 == 0 { None } else { Some(&from) },
                &format!("receiver, {i}"),
                &format!("{}_{}_1765000000", 100 + i, 7 * i),
            )
        })
        .collect();
    let mut store = Store::generate(&refs, 42, 0);
    // A message of 1000 pairs whose Seq runs straddle every 200 boundary.
    let big: Vec<StoredPair> = (0..1000)
        .map(|i| StoredPair {
            key: format!("big-{i:04}"),
            value: format!("v{i}"),
            seq: if i < 7 { 1 } else { 2 + (i as i64 - 7) / 20 },
        })
        .collect();
    store.messages.push(StoredMessage::new(
        MessageRef::new(Some("alice"), "bob", "big_1_1"),
        0,
        big,
    ));
    // 10002 three times, then fine.
    let mut flaky = StoredMessage::new(
        MessageRef::new(Some("alice"), "bob", "flaky_1_1"),
        0,
        vec![StoredPair {
            key: "k".into(),
            value: "v".into(),
            seq: 1,
        }],
    );
    flaky.script = vec!["10002".into(), "10002".into(), "10002".into()];
    store.messages.push(flaky);
    let mut all: Vec<MessageRef> = store
        .messages
        .iter()
        .map(|m| crate::common::one_to_one(&m.id).clone())
        .collect();
    if with_trouble {
        let mut bad =
            StoredMessage::new(MessageRef::new(Some("alice"), "bob", "bad_1_1"), 0, vec![]);
        bad.always = Some("10004".into());
        all.push(crate::common::one_to_one(&bad.id).clone());
        store.messages.push(bad);
    }
    let store = Store::new(store.messages);

    let mut input = String::from("From_Account,To_Account,MsgKey\n");
    let mut line = 1u64;
    let mut missing = Vec::new();
    let mut invalid = Vec::new();
    let push = |input: &mut String, text: String, line: &mut u64| {
        *line += 1;
        input.push_str(&text);
        input.push('\n');
    };
    for (i, m) in all.iter().enumerate() {
        let row = format!(
            "{},{},{}",
            crate::common::csv_field(m.from.as_deref().unwrap_or("")),
            crate::common::csv_field(&m.to),
            crate::common::csv_field(&m.msg_key)
        );
        push(&mut input, row.clone(), &mut line);
        if i % 50 == 3 {
            push(&mut input, row, &mut line); // duplicate
        }
        if i % 40 == 5 {
            let (to, key) = (format!("ghost {i}"), format!("{i}_0_0"));
            push(&mut input, format!("x,{to},{key}"), &mut line);
            missing.push((to, key, line));
        }
        if with_trouble && i % 60 == 7 {
            push(&mut input, format!("x,,{i}_9_9"), &mut line);
            invalid.push((String::new(), format!("{i}_9_9"), line));
            push(&mut input, "x,only-two-fields".to_owned(), &mut line);
            invalid.push(("only-two-fields".to_owned(), String::new(), line));
        }
    }
    let distinct = all.len() + missing.len();
    Fixture {
        store,
        input,
        missing,
        invalid,
        distinct,
    }
}

fn expected_rows(store: &Store) -> Vec<KvRow> {
    crate::common::expected_rows(store.messages.iter().filter(|m| m.always.is_none()))
}

/// A simulator serving the fixture, its input written to a folder, and where the lake goes.
async fn setup(fx: &Fixture, faults: Faults) -> (MockServer, tempfile::TempDir, PathBuf, PathBuf) {
    setup_with(fx.store.clone(), &fx.input, faults).await
}

/// A simulator serving `store`, `input` written to in.csv, and where the lake goes.
async fn setup_with(
    store: Store,
    input: &str,
    faults: Faults,
) -> (MockServer, tempfile::TempDir, PathBuf, PathBuf) {
    let server = start(store, faults).await;
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.csv");
    std::fs::write(&input_path, input).unwrap();
    let out = dir.path().join("lake");
    (server, dir, input_path, out)
}

async fn start(store: Store, faults: Faults) -> MockServer {
    crate::common::start_mock(store, faults, 7).await
}

async fn msgext(args: Vec<String>, secret: &str) -> Output {
    crate::common::run_msgext(args, secret, &[]).await
}

fn export_args(
    server: &MockServer,
    input: &Path,
    out: &Path,
    format: &str,
    run_id: &str,
) -> Vec<String> {
    crate::common::export_args(&server.url(), input, out, format, run_id, 16)
}

fn show(o: &Output) -> String {
    crate::common::show(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_with_faults_gives_exactly_the_simulators_data_in_both_formats() {
    let fx = fixture(true);
    let faults = Faults {
        p_10002: 0.1,
        ..Faults::default()
    };
    let (server, dir, input, _) = setup(&fx, faults).await;
    let want = expected_rows(&fx.store);
    assert!(
        want.len() > 5_000,
        "a realistic amount of data: {}",
        want.len()
    );

    let mut errors_want: Vec<(String, String, String, u64)> =
        fx.missing
            .iter()
            .map(|(to, key, line)| (to.clone(), key.clone(), "23004".to_owned(), *line))
            .chain(fx.invalid.iter().map(|(to, key, line)| {
                (to.clone(), key.clone(), "invalid_input".to_owned(), *line)
            }))
            .collect();
    let bad_line = fx
        .input
        .lines()
        .position(|l| l.ends_with(",bad_1_1"))
        .unwrap() as u64
        + 1;
    errors_want.push(("bob".into(), "bad_1_1".into(), "10004".into(), bad_line));
    errors_want.sort();

    for format in ["parquet", "csv"] {
        let out = dir.path().join(format!("lake-{format}"));
        let calls_before = server.stats().calls();
        let o = msgext(
            export_args(&server, &input, &out, format, "run1"),
            DEMO_SECRET_KEY,
        )
        .await;
        assert_eq!(o.status.code(), Some(3), "{}", show(&o));
        let (rows, msgs): (Vec<KvRow>, Vec<MsgRow>) = match format {
            "parquet" => (
                crate::common::kv_from_parquet(&out),
                crate::common::messages_from_parquet(&out),
            ),
            _ => (
                crate::common::kv_from_csv(&out),
                crate::common::messages_from_csv(&out),
            ),
        };
        assert_eq!(rows.len(), want.len(), "{format}");
        assert!(
            rows == want,
            "{format}: the lake differs from the simulator's data"
        );
        assert_eq!(crate::common::errors(&out, "run1"), errors_want, "{format}");

        assert_eq!(
            msgs.len(),
            fx.distinct,
            "{format}: one messages row per distinct message"
        );
        let count = |s: &str| msgs.iter().filter(|m| m.status == s).count();
        assert_eq!(count("not_found"), fx.missing.len());
        assert_eq!(count("failed"), 1);
        assert_eq!(count("ok"), fx.store.messages.len() - 1);
        let big = msgs.iter().find(|m| m.msg_key == "big_1_1").unwrap();
        assert_eq!(big.kv_count, 1000);

        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_runs/run1/summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["status"], "partial");
        assert_eq!(summary["kv_rows"], want.len() as u64);
        assert_eq!(summary["messages"]["not_found"], fx.missing.len() as u64);
        assert_eq!(summary["input"]["invalid"], fx.invalid.len() as u64);
        assert!(
            summary["retries"].as_u64().unwrap() > 0,
            "10002 answers were retried"
        );
        let calls = server.stats().calls() - calls_before;
        assert_eq!(
            summary["requests"], calls,
            "every request reached the simulator"
        );
        assert!(out.join("_runs/run1/_SUCCESS").exists());
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("not found") && stdout.contains("errors.csv"),
            "{stdout}"
        );
    }
    assert!(server.stats().answered("10002") > 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_export_exits_zero_even_with_messages_not_found() {
    let fx = fixture(false);
    let (server, _dir, input, out) = setup(&fx, Faults::default()).await;
    let o = msgext(
        export_args(&server, &input, &out, "parquet", "clean"),
        DEMO_SECRET_KEY,
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        crate::common::kv_from_parquet(&out),
        expected_rows(&fx.store)
    );
    assert_eq!(crate::common::errors(&out, "clean").len(), fx.missing.len());
    // Off a terminal, progress is JSON lines on stderr, the last one at the end.
    let stderr = String::from_utf8_lossy(&o.stderr);
    let last: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done");
    assert_eq!(last["run_id"], "clean");
    assert_eq!(last["status"], "complete");
    assert!(
        last["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{last}"
    );
    assert_eq!(last["kv_rows"], expected_rows(&fx.store).len() as u64);
    assert_eq!(last["rows_settled"], last["rows_total"]);
    // "errors" counts what an alert should: failed messages, not those the API says do not exist.
    assert_eq!(last["errors"], 0, "{last}");
    assert_eq!(last["not_found"], fx.missing.len() as u64, "{last}");
    // The flaky message needed its three 10002 answers retried.
    let flaky = fx
        .store
        .messages
        .iter()
        .position(|m| crate::common::one_to_one(&m.id).msg_key == "flaky_1_1")
        .unwrap();
    assert_eq!(server.stats().calls_for(flaky), 4);
    // --quiet: nothing at all when all is well.
    let mut args = export_args(&server, &input, &out, "parquet", "quiet");
    args.push("--quiet".into());
    let o = msgext(args, DEMO_SECRET_KEY).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{}", show(&o));
    // RUST_LOG: the operator's log on stderr, even with --quiet (a fresh
    // simulator, whose flaky message answers 10002 again).
    let (server, _dir, input, out) = setup(&fx, Faults::default()).await;
    let mut args = export_args(&server, &input, &out, "parquet", "logged");
    args.push("--quiet".into());
    let o = crate::common::run_msgext(args, DEMO_SECRET_KEY, &[("RUST_LOG", "msgext=debug")]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let log = String::from_utf8_lossy(&o.stderr);
    for line in [
        "INFO msgext::export: export started run_id=logged",
        "DEBUG msgext::fetch: retrying a call code=10002 attempt=1",
        "INFO msgext::export::writer: checkpoint committed seq=0",
        "INFO msgext::export: export ended run_id=logged status=Complete",
    ] {
        assert!(log.contains(line), "{line:?} in:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_run_that_does_not_complete_still_says_so_in_one_line() {
    let fx = fixture(false);
    let input = format!("{}snd,,no_recipient\n", fx.input);
    let (server, _dir, input, out) = setup_with(fx.store.clone(), &input, Faults::default()).await;
    let mut args = export_args(&server, &input, &out, "parquet", "quiet");
    args.push("--quiet".into());
    // An invalid row alone: exit 0, and one warning line.
    let o = msgext(args.clone(), DEMO_SECRET_KEY).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("warning: 1 input rows were invalid") && stderr.contains("--strict-input"),
        "{stderr}"
    );
    // With --strict-input (an audit), they make the run partial: exit 3.
    let at = args.iter().position(|a| a == "quiet").unwrap();
    args[at] = "strict".into();
    args.push("--strict-input".into());
    let o = msgext(args, DEMO_SECRET_KEY).await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("run strict partial") && stderr.contains("1 invalid input rows"),
        "{stderr}"
    );
    assert!(stderr.contains("errors.csv"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_the_run_with_exit_1_and_says_what_to_fix() {
    let fx = fixture(false);
    let (server, _dir, input, out) = setup(&fx, Faults::default()).await;
    let o = msgext(
        export_args(&server, &input, &out, "parquet", "r"),
        "not-the-secret",
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("70003") && stderr.contains("secret key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-secret"),
        "the secret is never printed"
    );
    assert_eq!(server.stats().answered("ok"), 0);
    assert_eq!(
        server.stats().calls(),
        1,
        "the probe stops the run after one call, whatever --concurrency is"
    );
    assert!(!out.join("_runs/r/_SUCCESS").exists());
    let summary = std::fs::read_to_string(out.join("_runs/r/summary.json")).unwrap();
    assert!(summary.contains("\"status\": \"failed\""), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_and_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.csv");
    let server = start(Store::default(), Faults::default()).await;
    let o = msgext(
        export_args(&server, &missing, &dir.path().join("o"), "csv", "x"),
        DEMO_SECRET_KEY,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.csv"));

    let headerless = dir.path().join("h.csv");
    std::fs::write(&headerless, "a,b,c\n").unwrap();
    let o = msgext(
        export_args(&server, &headerless, &dir.path().join("o"), "csv", "x"),
        DEMO_SECRET_KEY,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("To_Account"));

    let o = msgext(
        vec!["export".into(), "--input".into(), "x.csv".into()],
        DEMO_SECRET_KEY,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));

    // A URL of no store msgext writes to is refused by name, not taken for
    // a folder called "ftp:".
    let o = msgext(
        export_args(
            &server,
            &headerless,
            Path::new("ftp://host/prefix"),
            "csv",
            "x",
        ),
        DEMO_SECRET_KEY,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown scheme"));
    assert!(!Path::new("ftp:").exists());

    // A folder given as the input is a usage error in export and validate alike.
    let folder = dir.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let o = msgext(
        export_args(&server, &folder, &dir.path().join("o"), "csv", "x"),
        DEMO_SECRET_KEY,
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a-folder"));
    let o = msgext(
        vec![
            "validate".into(),
            "--input".into(),
            folder.to_string_lossy().into(),
        ],
        "",
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert_eq!(server.stats().calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_counts_without_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        b"From_Account,To_Account,MsgKey\r\na,b,1\r\na,b,1\r\na,,2\r\nc,\xff,3\r\nd,e,4\r\n",
    )
    .unwrap();
    let o = msgext(
        vec![
            "validate".into(),
            "--input".into(),
            input.to_string_lossy().into(),
        ],
        "",
    )
    .await;
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("5 rows, 2 distinct messages, 1 duplicates, 2 invalid"),
        "{stdout}"
    );
    assert!(stdout.contains("line 4: To_Account is empty"), "{stdout}");
    assert!(
        stdout.contains("line 5: To_Account is not valid UTF-8"),
        "{stdout}"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_leaves_readable_files_and_a_correct_errors_csv() {
    let refs: Vec<MessageRef> = (0..300)
        .map(|i| MessageRef::new(Some("a"), &format!("r{i}"), &format!("{i}_0_0")))
        .collect();
    let store = Store::generate(&refs, 3, 0);
    let faults = Faults {
        latency_ms: 20,
        ..Faults::default()
    };
    let (server, _dir, input, out) =
        setup_with(store.clone(), &crate::common::input_csv(&refs), faults).await;
    let mut args = export_args(&server, &input, &out, "parquet", "int");
    let c = args.iter().position(|a| a == "--concurrency").unwrap();
    args[c + 1] = "4".to_owned();
    let cmd = crate::common::msgext_command(&args, DEMO_SECRET_KEY, &[]);
    let status = crate::common::signal_midway(cmd, server.stats(), 40, "-INT").await;
    assert_eq!(status.code(), Some(130));

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_runs/int/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["status"], "interrupted");
    assert!(!out.join("_runs/int/_SUCCESS").exists());
    let msgs = crate::common::messages_from_parquet(&out);
    let ok: Vec<&MsgRow> = msgs.iter().filter(|m| m.status == "ok").collect();
    assert!(
        !ok.is_empty() && msgs.len() < 300,
        "stopped midway: {} of 300",
        msgs.len()
    );
    // What was exported is exactly the simulator's data for those messages.
    let exported: Vec<&StoredMessage> = store
        .messages
        .iter()
        .filter(|m| {
            let id = crate::common::one_to_one(&m.id);
            ok.iter().any(|o| o.to == id.to && o.msg_key == id.msg_key)
        })
        .collect();
    assert_eq!(
        crate::common::kv_from_parquet(&out),
        crate::common::expected_rows(exported)
    );
    // errors.csv lists exactly the messages that were started and not
    // finished; they are not in the messages table (a resume fetches them).
    let errors = crate::common::errors(&out, "int");
    assert!(msgs.iter().all(|m| m.status == "ok"));
    assert!(!errors.is_empty());
    assert_eq!(
        errors.len() as u64,
        summary["messages"]["unfinished"].as_u64().unwrap()
    );
    assert!(errors.iter().all(|e| e.2 == "interrupted"), "{errors:?}");
    assert!(
        errors.iter().all(|e| !msgs.iter().any(|m| m.to == e.0)),
        "none of them is settled"
    );
    assert_eq!(summary["messages"]["ok"], ok.len() as u64);

    // The same command again finishes the job: every message once, exactly the data.
    let o = msgext(args, DEMO_SECRET_KEY).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        crate::common::kv_from_parquet(&out),
        crate::common::expected_rows(&store.messages)
    );
    assert_eq!(crate::common::messages_from_parquet(&out).len(), 300);
    assert!(crate::common::errors(&out, "int").is_empty());
    assert!(out.join("_runs/int/_SUCCESS").exists());
    let o = msgext(
        export_args(&server, &input, &out, "parquet", "int"),
        DEMO_SECRET_KEY,
    )
    .await;
    assert_eq!(
        o.status.code(),
        Some(2),
        "a completed run is not run again: {}",
        show(&o)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already completed"));
}

/// A TLS front for the simulator: 127.0.0.1:0, the certificate of
/// tests/tls/server.pem (for 127.0.0.1, issued by tests/tls/ca.pem; both
/// made with openssl, P-256, valid until 2126), each connection relayed to
/// the simulator's plain HTTP port. Returns the front's https URL.
async fn tls_front(server: &MockServer) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let certs = CertificateDer::pem_file_iter(tls.join("server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(tls.join("server.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let backend = server.url().trim_start_matches("http://").to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                // A handshake the client refuses ends here; so does the relay
                // when either side closes.
                if let Ok(mut front) = acceptor.accept(tcp).await
                    && let Ok(mut back) = tokio::net::TcpStream::connect(&backend).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut front, &mut back).await;
                }
            });
        }
    });
    url
}

/// The path every real export takes: an https endpoint. msgext checks the
/// certificate against the trusted roots (here the test CA, named in
/// SSL_CERT_FILE) and exports exactly the simulator's data through TLS; a
/// certificate from a CA it does not trust fails the run on its first
/// call, with exit 1 and the cause, and nothing is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_endpoint_is_exported_over_tls_and_an_untrusted_certificate_fails_the_run() {
    let fx = fixture(false);
    let (server, dir, input, out) = setup(&fx, Faults::default()).await;
    let front = tls_front(&server).await;
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let trusting = |ca: &str| tls.join(ca).to_string_lossy().into_owned();
    let ca = trusting("ca.pem");
    let env = [("SSL_CERT_FILE", ca.as_str()), ("SSL_CERT_DIR", "")];
    let args = crate::common::export_args(&front, &input, &out, "parquet", "tls", 16);
    let o = crate::common::run_msgext(args, DEMO_SECRET_KEY, &env).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        crate::common::kv_from_parquet(&out),
        expected_rows(&fx.store)
    );
    assert!(out.join("_runs/tls/_SUCCESS").exists());

    let answered = server.stats().calls();
    let other = trusting("other-ca.pem");
    let env = [("SSL_CERT_FILE", other.as_str()), ("SSL_CERT_DIR", "")];
    let out = dir.path().join("lake-untrusted");
    let args = crate::common::export_args(&front, &input, &out, "parquet", "untrusted", 16);
    let o = crate::common::run_msgext(args, DEMO_SECRET_KEY, &env).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&front)
            && stderr.contains("invalid peer certificate: UnknownIssuer")
            && stderr.contains("SSL_CERT_FILE"),
        "names the endpoint, the cause and what to check: {}",
        show(&o)
    );
    assert_eq!(server.stats().calls(), answered, "no call got through");
    assert!(!out.join("_runs/untrusted/_SUCCESS").exists());
    assert!(crate::common::kv_from_parquet(&out).is_empty());
}

/// The binary users run carries no crash points, whatever build ran before:
/// `MSGEXT_FAILPOINT` changes nothing in it, and its bytes do not name it;
/// the tests' own binary (`msgext-crashtest`) is the one that dies there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_users_run_has_no_crash_points() {
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_msgext")).unwrap();
    for needle in [&b"MSGEXT_FAILPOINT"[..], b"MSGEXT_TEST_", b"failpoint"] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{} is in the binary users run",
            String::from_utf8_lossy(needle)
        );
    }
    let crashtest = std::fs::read(env!("CARGO_BIN_EXE_msgext-crashtest")).unwrap();
    assert!(crashtest.windows(16).any(|w| w == b"MSGEXT_FAILPOINT"));

    let fx = fixture(false);
    let (server, dir, input, out) = setup(&fx, Faults::default()).await;
    let args = export_args(&server, &input, &out, "parquet", "r1");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_msgext"))
        .args(&args)
        .env("MSGEXT_SECRET_KEY", DEMO_SECRET_KEY)
        .env("MSGEXT_FAILPOINT", "settled:1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    drop(dir);
}

/// `msgext demo` exports the samples (the use case's polls among them) and
/// answers one question from the current tables: the poll with the most
/// votes, as the shipped store holds it (votes with an empty value were
/// taken back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_which_poll_has_the_most_votes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo-lake");
    let args = vec![
        "demo".to_owned(),
        "--out".to_owned(),
        out.to_string_lossy().into_owned(),
    ];
    let o = crate::common::run_msgext(args, DEMO_SECRET_KEY, &[]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let store = Store::load(Path::new("sample-input/store.json")).unwrap();
    let (question, votes) = store
        .messages
        .iter()
        .filter_map(|m| {
            let live = m.live_pairs();
            let question = live
                .iter()
                .find(|p| p.key == "poll:question")?
                .value
                .clone();
            let votes = live
                .iter()
                .filter(|p| p.key.starts_with("vote:") && !p.value.is_empty())
                .count();
            Some((question, votes))
        })
        .max_by_key(|(_, v)| *v)
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("The poll with the most votes"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains(&format!("{question:?} ({votes} votes:")),
        "{line}"
    );
    // A night of callbacks: a listener committed them, and `export --changed` read what they named.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("now `export --changed`"), "{err}");
    let named = |kind: &str| {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("--changed, {kind}:")))
            .unwrap_or_else(|| panic!("{err}"));
        // "msgext: --changed, one-to-one: 147 messages: 69 named by …"
        let n: usize = line
            .split(": ")
            .nth(2)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        n
    };
    assert!(named("one-to-one") > 0 && named("group") > 0, "{err}");
    assert!(!crate::common::listener::event_rows(&out, false).is_empty());
    assert!(!crate::common::listener::event_rows(&out, true).is_empty());
}
