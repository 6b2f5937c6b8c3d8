//! The throughput benchmark: `cargo bench --bench throughput`.
//!
//! Starts `msgext mock` as a process of its own (so that the simulator's CPU
//! is not counted as the client's), runs `msgext export` against it, and
//! reports from the client's own summary and from wait4's rusage:
//! - the share of a 200 calls/s quota used at 150 ms latency with default
//!   flags, and the share of calls answered with a quota code;
//! - pages/s with the limit off, and client CPU seconds per 1,000 pages
//!   (Parquet, then the same pages into CSV), and the CPU of a page of 1, 20
//!   and 200 pairs (what a page and what a pair costs);
//! - peak RSS at ~50k and ~1.25M exported rows;
//! - peak RSS at 50,000 and 200,000 one-pair messages (memory flat in messages);
//! - peak RSS of a resume after kill -9 with a ~40 MB write-ahead log.
//!
//! `MSGEXT_BENCH_RUNS=N` repeats the quota run N times and prints each of its
//! figures as a range and a median.
//! `cargo bench --bench throughput -- memory` runs the last two only,
//! `-- throughput` all but them, `-- quota` the quota run alone (CPU and
//! context switches a call); `-- s3` compares a local folder with an S3
//! bucket (an in-process s3s server) at 1.25M rows and at the quota;
//! `-- peer` runs msgext and a plain Python exporter (`peer_aiohttp.py`,
//! aiohttp + pyarrow, with the Python in `MSGEXT_PEER_PYTHON`, default
//! `python3`) back to back, at the quota and with the limit off, and
//! compares their CPU; `-- delta` times a run's commit to a Delta table
//! with 10 and with 1,000 earlier versions (a checkpoint every 100);
//! `-- incremental` exports 1M messages, changes 10% of them, exports again
//! and again with nothing changed (calls, pairs, peak RSS of each night);
//! `-- listen` posts signed callbacks to one `msgext listen` at 2,000,
//! 5,000 and 8,000 a second (answer latency p50/p99, the listener's CPU);
//! `-- changed` counts the calls of an `export --changed` night over 1M
//! known messages with 1% changed (`MSGEXT_BENCH_MESSAGES` for another N).
//! Nothing here asserts: it prints the numbers for the README.

mod capture;
#[path = "../common/s3server.rs"]
mod s3server;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary measured: this build's, or another given in `MSGEXT_BENCH_BIN`
/// (an earlier build, for before/after figures).
fn bin() -> String {
    std::env::var("MSGEXT_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_msgext").to_owned())
}
/// The binary that dies at a crash point (`MSGEXT_FAILPOINT`): the tests'
/// own build, or another given in `MSGEXT_BENCH_CRASH_BIN`.
fn crash_bin() -> String {
    std::env::var("MSGEXT_BENCH_CRASH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_msgext-crashtest").to_owned())
}
const KEY: &str = "msgext-demo-secret-key-not-for-production";
/// The simulator of the quota runs: 4,000 messages of 20 pairs, 150 ms
/// latency, a quota of 200 calls/s.
const QUOTA_RUN: &[&str] = &[
    "--synthetic",
    "4000",
    "--pairs",
    "20",
    "--latency-ms",
    "150",
    "--quota",
    "200",
];

struct Usage {
    wall: Duration,
    cpu: Duration,
    max_rss_kb: i64,
    /// Voluntary and involuntary context switches.
    csw: i64,
    ok: bool,
}

/// Wait for a child and return its resource usage (wait4).
fn wait_usage(child: Child, started: Instant) -> Usage {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 writes it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = started.elapsed();
    assert_eq!(r, pid, "wait4");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        wall,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        max_rss_kb: ru.ru_maxrss,
        csw: ru.ru_nvcsw + ru.ru_nivcsw,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}

struct Mock {
    child: Child,
    url: String,
}

fn mock(dir: &Path, args: &[&str]) -> Mock {
    let input = dir.join("in.csv");
    let mut child = Command::new(bin())
        .arg("mock")
        .args(args)
        .arg("--write-input")
        .arg(&input)
        .env("MSGEXT_SECRET_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start msgext mock");
    let url = first_line(&mut child);
    Mock { child, url }
}

/// The first line a child prints on stdout (a server's URL).
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the server prints its URL");
    line.trim().to_owned()
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn export(dir: &Path, mock: &Mock, extra: &[&str]) -> (Usage, serde_json::Value) {
    let _ = std::fs::remove_dir_all(dir.join("lake"));
    export_env(dir, mock, extra, &[])
}

/// `export` into the lake as it is (a resume), with extra environment.
fn export_env(
    dir: &Path,
    mock: &Mock,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Usage, serde_json::Value) {
    let out = dir.join("lake");
    let summary = out.join("_runs/bench/summary.json");
    export_to(dir, mock, &out.to_string_lossy(), &summary, extra, env)
}

/// `export --out OUT`; the summary is read from `summary` when it ends.
fn export_to(
    dir: &Path,
    mock: &Mock,
    out: &str,
    summary: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (Usage, serde_json::Value) {
    let started = Instant::now();
    // Crash points exist only in the tests' own build of the binary.
    let killed = env.iter().any(|(k, _)| *k == "MSGEXT_FAILPOINT");
    let program = if killed { crash_bin() } else { bin() };
    let run_id: &[&str] = match extra.contains(&"--run-id") {
        true => &[],
        false => &["--run-id", "bench"],
    };
    let child = Command::new(program)
        .args([
            "export",
            "--quiet",
            "--sdkappid",
            "1400000000",
            "--endpoint",
            &mock.url,
        ])
        .args(run_id)
        .arg("--input")
        .arg(dir.join("in.csv"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .env("MSGEXT_SECRET_KEY", KEY)
        .envs(env.iter().copied())
        .stderr(Stdio::null())
        .spawn()
        .expect("start msgext export");
    let usage = wait_usage(child, started);
    let summary = std::fs::read(summary)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    (usage, summary)
}

fn mb(kb: i64) -> f64 {
    kb as f64 / 1024.0
}

/// Peak RSS at 50k and 200k one-pair messages, and of a resume after kill -9
/// with a ~40 MB write-ahead log.
fn memory(dir: &Path, rows: &mut Vec<(String, String)>) {
    let mut peaks = Vec::new();
    for n in ["50000", "200000"] {
        let m = mock(dir, &["--synthetic", n, "--pairs", "1"]);
        let (u, s) = export(dir, &m, &["--rate", "0"]);
        rows.push((
            format!("peak RSS, {n} one-pair messages, limit off"),
            format!(
                "{:.1} MB ({} messages ok in {:.1} s, ok={})",
                mb(u.max_rss_kb),
                s["messages"]["ok"],
                u.wall.as_secs_f64(),
                u.ok
            ),
        ));
        peaks.push(u.max_rss_kb);
    }
    rows.push((
        "peak RSS growth, 50k → 200k one-pair messages".to_owned(),
        format!("{:.2}x", peaks[1] as f64 / peaks[0] as f64),
    ));
    // Messages of 200 pairs log ~14 KB each: killed at the 3,000th, the WAL
    // holds ~40 MB (no part is full and no other checkpoint is due).
    let m = mock(dir, &["--synthetic", "6250", "--pairs", "200"]);
    let _ = std::fs::remove_dir_all(dir.join("lake"));
    let big_parts = ["--rate", "0", "--max-file-mb", "4096"];
    let (killed, _) = export_env(dir, &m, &big_parts, &[("MSGEXT_FAILPOINT", "settled:3000")]);
    let log: u64 = std::fs::read_dir(dir.join("lake/_runs/bench"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
                .filter_map(|e| e.metadata().ok())
                .map(|md| md.len())
                .sum()
        })
        .unwrap_or(0);
    if killed.ok {
        // MSGEXT_BENCH_CRASH_BIN named a build without crash points: it
        // ran to the end, and there is nothing to resume.
        rows.push((
            "peak RSS of the resume after kill -9".to_owned(),
            "not measured: the crash binary has no crash points".to_owned(),
        ));
        return;
    }
    let (u, s) = export_env(dir, &m, &big_parts, &[]);
    rows.push((
        format!(
            "peak RSS of the resume after kill -9 with a {:.1} MB log",
            log as f64 / 1048576.0
        ),
        format!(
            "{:.1} MB ({} messages replayed from the log, {} rows, killed run: ok={}, resume ok={})",
            mb(u.max_rss_kb),
            s["messages"]["resumed"],
            s["kv_rows"],
            killed.ok,
            u.ok
        ),
    ));
}

/// The same exports into a local folder and into an S3 bucket, back to back:
/// 1.25M rows with the limit off, and 4,000 calls at a 200/s quota.
fn s3(dir: &Path, rows: &mut Vec<(String, String)>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(s3server::S3Server::start(&dir.join("s3"), &["bench"]));
    let env = server.env(s3server::SECRET);
    let env = s3server::refs(&env);
    let cases: [(&str, &[&str], &[&str]); 2] = [
        (
            "1.25M rows, limit off",
            &["--synthetic", "6250", "--pairs", "200"],
            &["--rate", "0"],
        ),
        ("4,000 calls at a 200/s quota, 150 ms", QUOTA_RUN, &[]),
    ];
    for (name, mock_args, flags) in cases {
        let m = mock(dir, mock_args);
        for target in ["folder", "S3 bucket"] {
            let _ = std::fs::remove_dir_all(dir.join("lake"));
            let _ = std::fs::remove_dir_all(dir.join("s3/bench/lake"));
            let _ = std::fs::remove_dir_all(dir.join("state"));
            let state = dir.join("state").to_string_lossy().into_owned();
            let mut extra = flags.to_vec();
            extra.extend(["--state-dir", &state]);
            let (u, s) = if target == "S3 bucket" {
                let summary = dir.join("s3/bench/lake/_runs/bench/summary.json");
                export_to(dir, &m, "s3://bench/lake", &summary, &extra, &env)
            } else {
                let summary = dir.join("lake/_runs/bench/summary.json");
                export_to(
                    dir,
                    &m,
                    &dir.join("lake").to_string_lossy(),
                    &summary,
                    &extra,
                    &[],
                )
            };
            let calls = n(&s["requests"]);
            rows.push((
                format!("{name}, into {}", if target == "folder" { "a folder" } else { "an S3 bucket" }),
                format!(
                    "{:.1} s, {:.0} calls/s, peak RSS {:.1} MB, CPU {:.3} ms a call, {} rows, {} files (ok={})",
                    u.wall.as_secs_f64(),
                    calls / u.wall.as_secs_f64(),
                    mb(u.max_rss_kb),
                    u.cpu.as_secs_f64() * 1000.0 / calls,
                    s["kv_rows"],
                    s["files"].as_array().map_or(0, |f| f.len()),
                    u.ok
                ),
            ));
        }
    }
}

/// The peer's run against `m`: its rusage and the JSON line it prints, or
/// why it could not be measured.
fn peer_run(
    dir: &Path,
    python: &str,
    m: &Mock,
    extra: &[&str],
) -> Result<(Usage, serde_json::Value), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bench/peer_aiohttp.py");
    let started = Instant::now();
    let mut child = Command::new(python)
        .arg(script)
        .arg("--endpoint")
        .arg(&m.url)
        .arg("--input")
        .arg(dir.join("in.csv"))
        .arg("--out")
        .arg(dir.join("peer.parquet"))
        .args(extra)
        .env("MSGEXT_SECRET_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
    let usage = wait_usage(child, started);
    serde_json::from_str(&line)
        .map(|p| (usage, p))
        .map_err(|_| {
            format!(
                "{python}: `pip install aiohttp pyarrow`? {}",
                err.lines().last().unwrap_or("")
            )
        })
}

/// msgext and a Python peer back to back against the same simulator, at the
/// quota (CPU a call) and with the limit off (CPU a page of 200 pairs).
fn peer(dir: &Path, rows: &mut Vec<(String, String)>) {
    let python = std::env::var("MSGEXT_PEER_PYTHON").unwrap_or_else(|_| "python3".into());
    let cases: [(&str, &[&str], &[&str]); 2] = [
        ("a call at the quota", QUOTA_RUN, &[]),
        (
            "a page of 200 pairs, limit off",
            &["--synthetic", "6250", "--pairs", "200"],
            &["--rate", "0"],
        ),
    ];
    for (what, mock_args, flags) in cases {
        let m = mock(dir, mock_args);
        let (u, s) = export(dir, &m, flags);
        let calls = n(&s["requests"]);
        let ours = u.cpu.as_secs_f64() * 1000.0 / calls;
        rows.push((
            format!("msgext: CPU {what}"),
            format!(
                "{ours:.3} ms ({:.2} s for {calls} calls, {} rows, {:.1} s, ok={})",
                u.cpu.as_secs_f64(),
                s["kv_rows"],
                n(&s["elapsed_secs"]),
                u.ok
            ),
        ));
        let (pu, p) = match peer_run(dir, &python, &m, flags) {
            Ok(run) => run,
            Err(why) => {
                rows.push(("Python peer".to_owned(), format!("not measured: {why}")));
                return;
            }
        };
        let pcalls = n(&p["calls"]);
        let theirs = pu.cpu.as_secs_f64() * 1000.0 / pcalls;
        rows.push((
            format!("Python aiohttp+pyarrow peer: CPU {what}"),
            format!(
                "{theirs:.3} ms ({:.2} s for {pcalls} calls, {} rows, {:.1} s; {:.3} ms without \
                 its start-up)",
                pu.cpu.as_secs_f64(),
                p["rows"],
                n(&p["elapsed_secs"]),
                n(&p["cpu_after_start_secs"]) * 1000.0 / pcalls
            ),
        ));
        rows.push((
            format!("msgext's CPU {what} against the peer's (target ≤ 0.25)"),
            format!("{:.2}", ours / theirs),
        ));
    }
}

/// The quota runs' figures, one entry a run, and what they add up to.
#[derive(Default)]
struct QuotaRuns {
    any_failed: bool,
    calls: f64,
    share: Vec<f64>,
    cpu_ms: Vec<f64>,
    csw: Vec<f64>,
    fsyncs: Vec<f64>,
    limited: Vec<f64>,
}

/// One run's value as it is; several as `min–max, median M (N runs)`.
fn spread(values: &[f64], decimals: usize, unit: &str) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.as_slice() {
        [] => "no run".to_owned(),
        [one] => format!("{one:.decimals$}{unit}"),
        [lo, .., hi] => {
            let mid = v.len() / 2;
            let median = if v.len() % 2 == 1 {
                v[mid]
            } else {
                (v[mid - 1] + v[mid]) / 2.0
            };
            format!(
                "{lo:.decimals$}–{hi:.decimals$}{unit}, median {median:.decimals$}{unit} ({} runs)",
                v.len()
            )
        }
    }
}

fn n(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benchmarks; there is nothing to list.
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cores} cores, {cpu}");
    let mut rows = Vec::new();
    if std::env::args().any(|a| a == "s3") {
        s3(dir.path(), &mut rows);
        print_rows(rows);
        return;
    }
    if std::env::args().any(|a| a == "delta") {
        delta(dir.path(), &mut rows);
        print_rows(rows);
        return;
    }
    if std::env::args().any(|a| a == "incremental") {
        incremental(dir.path(), &mut rows);
        print_rows(rows);
        return;
    }
    if std::env::args().any(|a| a == "listen") {
        capture::listen_bench(dir.path(), &mut rows);
        print_rows(rows);
        return;
    }
    if std::env::args().any(|a| a == "changed") {
        capture::changed_bench(dir.path(), &mut rows);
        print_rows(rows);
        return;
    }
    if std::env::args().any(|a| a == "peer") {
        peer(dir.path(), &mut rows);
        print_rows(rows);
        return;
    }
    if !std::env::args().any(|a| a == "throughput" || a == "quota") {
        memory(dir.path(), &mut rows);
    }
    if std::env::args().any(|a| a == "memory") {
        print_rows(rows);
        return;
    }

    // 1. Default flags against a 200 calls/s quota at 150 ms latency,
    // `MSGEXT_BENCH_RUNS` times (default once): CPU time moves by 10-20%
    // from one run to the next on a shared machine, so several runs give
    // the range and the median of each figure.
    {
        let runs: usize = match std::env::var("MSGEXT_BENCH_RUNS") {
            Err(_) => 1,
            Ok(v) => match v.parse() {
                Ok(n) if n > 0 => n,
                _ => panic!("MSGEXT_BENCH_RUNS={v:?}: give a number of runs, 1 or more"),
            },
        };
        let m = mock(dir.path(), QUOTA_RUN);
        let mut quota = QuotaRuns::default();
        for _ in 0..runs {
            let (u, s) = export(dir.path(), &m, &[]);
            let calls = n(&s["requests"]);
            let secs = n(&s["elapsed_secs"]);
            quota.any_failed |= !u.ok;
            quota.calls += calls;
            quota.share.push(calls / secs / 2.0);
            quota.cpu_ms.push(u.cpu.as_secs_f64() * 1000.0 / calls);
            quota.csw.push(u.csw as f64 / calls);
            quota.fsyncs.push(n(&s["wal_syncs"]) / secs);
            quota.limited.push(100.0 * n(&s["rate_limited"]) / calls);
        }
        rows.push((
            "quota used, 200/s quota, 150 ms latency, default flags".to_owned(),
            format!(
                "{} ({} calls in all, ok={})",
                spread(&quota.share, 1, "%"),
                quota.calls,
                !quota.any_failed
            ),
        ));
        rows.push((
            "client CPU a call at the quota (user + system)".to_owned(),
            spread(&quota.cpu_ms, 3, " ms"),
        ));
        rows.push((
            "context switches a call at the quota".to_owned(),
            spread(&quota.csw, 1, ""),
        ));
        rows.push((
            "WAL fsyncs a second at the quota".to_owned(),
            spread(&quota.fsyncs, 1, ""),
        ));
        rows.push((
            "calls answered with a quota code".to_owned(),
            spread(&quota.limited, 2, "%"),
        ));
    }
    if std::env::args().any(|a| a == "quota") {
        print_rows(rows);
        return;
    }
    // 2. The limit off: 6,250 pages of 200 pairs = 1.25M rows.
    {
        let m = mock(dir.path(), &["--synthetic", "6250", "--pairs", "200"]);
        // Warm the simulator's page cache so that it is not the bottleneck.
        let _ = export(dir.path(), &m, &["--rate", "0"]);
        let (u, s) = export(dir.path(), &m, &["--rate", "0"]);
        let pages = n(&s["requests"]);
        rows.push((
            "pages/s, limit off (200 pairs a page)".to_owned(),
            format!(
                "{:.0} ({pages} pages in {:.2} s, ok={})",
                pages / u.wall.as_secs_f64(),
                u.wall.as_secs_f64(),
                u.ok
            ),
        ));
        rows.push((
            "client CPU per 1,000 pages".to_owned(),
            format!(
                "{:.3} s ({:.3} ms a page)",
                u.cpu.as_secs_f64() * 1000.0 / pages,
                u.cpu.as_secs_f64() * 1000.0 / pages
            ),
        ));
        rows.push((
            format!("peak RSS at {} rows", s["kv_rows"]),
            format!("{:.1} MB", u.max_rss_kb as f64 / 1024.0),
        ));
        let big = u.max_rss_kb;
        let page_200 = u.cpu.as_secs_f64() * 1000.0 / pages;
        // The same pages into CSV.
        let (u, s) = export(dir.path(), &m, &["--rate", "0", "--format", "csv"]);
        let pages = n(&s["requests"]);
        rows.push((
            "the same into CSV: pages/s, CPU a page".to_owned(),
            format!(
                "{:.0}, {:.3} ms ({pages} pages in {:.2} s, ok={})",
                pages / u.wall.as_secs_f64(),
                u.cpu.as_secs_f64() * 1000.0 / pages,
                u.wall.as_secs_f64(),
                u.ok
            ),
        ));
        drop(m);
        // 3. What a page costs by its size: 20,000 pages of 1 pair and of 20
        // pairs, against the 200 above; a straight line through the 1 and
        // the 200 gives the cost of a call and of a pair.
        let mut by_size = Vec::new();
        for pairs in ["1", "20"] {
            let m = mock(dir.path(), &["--synthetic", "20000", "--pairs", pairs]);
            let _ = export(dir.path(), &m, &["--rate", "0"]);
            let (u, s) = export(dir.path(), &m, &["--rate", "0"]);
            by_size.push((u.cpu.as_secs_f64() * 1000.0 / n(&s["requests"]), u.ok));
        }
        let [(page_1, ok_1), (page_20, ok_20)] = by_size[..] else {
            unreachable!("two sizes")
        };
        let per_pair = (page_200 - page_1) / 199.0;
        rows.push((
            "client CPU a page of 1 / 20 / 200 pairs, limit off".to_owned(),
            format!(
                "{page_1:.3} / {page_20:.3} / {page_200:.3} ms: about {:.3} ms a page and \
                 {:.2} µs a pair (ok={})",
                page_1 - per_pair,
                per_pair * 1000.0,
                ok_1 && ok_20
            ),
        ));
        // 4. The same as 2 at ~50k rows.
        let m = mock(dir.path(), &["--synthetic", "250", "--pairs", "200"]);
        let (u, s) = export(dir.path(), &m, &["--rate", "0"]);
        rows.push((
            format!("peak RSS at {} rows", s["kv_rows"]),
            format!(
                "{:.1} MB (1.25M rows use {:.2}x)",
                u.max_rss_kb as f64 / 1024.0,
                big as f64 / u.max_rss_kb as f64
            ),
        ));
    }
    print_rows(rows);
}

/// A run's commit to a local Delta table (reading the table's state,
/// checking the run's transaction id, writing the entry) after `n`
/// earlier commits, as msgext makes it at the end of a run: the median of
/// five, in milliseconds.
fn delta(dir: &Path, rows: &mut Vec<(String, String)>) {
    use msgext::kind::Kind;
    use msgext::table::delta::{
        Changes, DataFile, DeltaLake, PARTITION_COLUMNS, RunCommit, TableSpec, table_schema,
    };
    use msgext::write::TableRoot;
    use msgext::write::stats::{Bound, ColumnStats};
    let spec = TableSpec {
        schema: table_schema(&msgext::write::schema::key_values_schema(Kind::OneToOne))
            .expect("schema"),
        partitions: &PARTITION_COLUMNS,
        stats_columns: vec!["from_account".into(), "to_account".into(), "msg_key".into()],
    };
    let lake = dir.join("delta");
    std::fs::create_dir_all(lake.join("kv")).expect("table folder");
    let root = TableRoot {
        store: std::sync::Arc::new(object_store::local::LocalFileSystem::new()),
        url: reqwest::Url::from_directory_path(&lake).expect("url"),
    };
    let d = DeltaLake::open(root).expect("engine");
    let commit = |i: usize| -> Duration {
        let id = format!("r{i:05}");
        // A nightly run: two part files.
        let files: Vec<DataFile> = (0..2)
            .map(|p| DataFile {
                path: format!("dt=2026-12-02/run_id={id}/part-{p:05}-{id}.parquet"),
                partition: vec!["2026-12-02".into(), id.clone()],
                bytes: 128 << 20,
                rows: 1_000_000,
                stats: ["from_account", "to_account", "msg_key"]
                    .map(|c| ColumnStats {
                        name: c.into(),
                        nulls: 0,
                        bounds: Some((
                            Bound::Text(format!("{c}-0")),
                            Bound::Text(format!("{c}-9")),
                        )),
                    })
                    .into(),
            })
            .collect();
        let run = RunCommit {
            run_id: &id,
            sdkappid: 1,
            status: "complete",
            messages: 1,
            kv_rows: 2_000_000,
        };
        let t = Instant::now();
        let snapshot = (i > 0).then(|| d.snapshot("kv").expect("snapshot"));
        let changes = Changes {
            adds: &files,
            removes: &[],
        };
        d.commit_run("kv", &spec, changes, &run, snapshot)
            .expect("commit");
        t.elapsed()
    };
    let median_ms = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    let mut i = 0;
    for target in [10, 1000] {
        while i < target {
            commit(i);
            i += 1;
        }
        let times: Vec<Duration> = (0..5)
            .map(|_| {
                let t = commit(i);
                i += 1;
                t
            })
            .collect();
        rows.push((
            format!("commit of a run at ~{target} prior versions (median of 5)"),
            format!("{:.1} ms", median_ms(times)),
        ));
    }
}

/// `-- incremental`: `MSGEXT_BENCH_MESSAGES` (default 1,000,000) messages
/// of 10 pairs exported in full, then again after 10% of them changed
/// (deletes that move LatestSeq), then again with nothing changed: the
/// calls and pairs of each night, its time, and its peak RSS (the current
/// tables read, merged and rewritten).
fn incremental(dir: &Path, rows: &mut Vec<(String, String)>) {
    let n: usize = std::env::var("MSGEXT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let count = n.to_string();
    let base = [
        "--synthetic",
        count.as_str(),
        "--pairs",
        "10",
        "--deletes",
        "hidden",
    ];
    let out = dir.join("lake");
    let night = |m: &Mock, run: &str| {
        let summary = out.join(format!("_runs/{run}/summary.json"));
        let extra = ["--rate", "0", "--run-id", run];
        export_to(dir, m, &out.to_string_lossy(), &summary, &extra, &[])
    };
    let mut show = |what: &str, (u, s): (Usage, serde_json::Value)| {
        rows.push((
            format!("{what}: {n} messages"),
            format!(
                "{:.0} calls, {:.0} pairs, {:.1} s, peak RSS {:.1} MB, CPU {:.1} s (ok={})",
                self::n(&s["requests"]),
                self::n(&s["kv_rows"]),
                u.wall.as_secs_f64(),
                mb(u.max_rss_kb),
                u.cpu.as_secs_f64(),
                u.ok
            ),
        ));
    };
    let m = mock(dir, &base);
    show("night 0, every message read in full", night(&m, "n0"));
    drop(m);
    let changed = [&base[..], &["--change", "0.1"]].concat();
    let m = mock(dir, &changed);
    show("night 1, 10% of messages changed", night(&m, "n1"));
    show("night 2, nothing changed", night(&m, "n2"));
    let live = dir.join("lake/current_key_values");
    let bytes: u64 = walk_bytes(&live);
    rows.push((
        "current_key_values on disk".into(),
        format!("{:.1} MB", bytes as f64 / 1e6),
    ));
    maintenance(&out, n, rows);
}

/// After the nights: `msgext verify` of the lake, then `msgext vacuum
/// --retain 0h --force`: time, peak RSS, the lake's bytes before and after.
fn maintenance(out: &Path, n: usize, rows: &mut Vec<(String, String)>) {
    let lake = out.to_string_lossy().into_owned();
    let run = |args: &[&str]| {
        let started = Instant::now();
        let child = Command::new(bin())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("msgext");
        wait_usage(child, started)
    };
    let show = |u: &Usage| {
        format!(
            "{:.1} s, peak RSS {:.1} MB, CPU {:.1} s (ok={})",
            u.wall.as_secs_f64(),
            mb(u.max_rss_kb),
            u.cpu.as_secs_f64(),
            u.ok
        )
    };
    let u = run(&["verify", "--out", &lake, "--quiet"]);
    rows.push((
        format!("verify of the lake after 3 nights: {n} messages"),
        show(&u),
    ));
    let before = walk_bytes(out);
    let u = run(&[
        "vacuum", "--out", &lake, "--retain", "0h", "--force", "--quiet",
    ]);
    let after = walk_bytes(out);
    rows.push((
        format!("vacuum --retain 0h after 3 nights: {n} messages"),
        format!(
            "{}; lake {:.1} MB → {:.1} MB",
            show(&u),
            before as f64 / 1e6,
            after as f64 / 1e6
        ),
    ));
}

fn walk_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.filter_map(Result::ok)
            .map(|e| match e.file_type().map(|t| t.is_dir()) {
                Ok(true) => walk_bytes(&e.path()),
                _ => e.metadata().map_or(0, |m| m.len()),
            })
            .sum()
    })
}

fn print_rows(rows: Vec<(String, String)>) {
    println!("\n| measure | result |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}
