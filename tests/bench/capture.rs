//! Change capture: `-- listen` (callbacks a second one listener takes with
//! answers under 100 ms at the 99th percentile, fsync on) and `-- changed`
//! (the calls of a `--changed` night: N known messages, 1% changed, K = 7).

use super::{KEY, Usage, mb, wait_usage};
use msgext::api::callback::{ExtensionEvent, Operation};
use msgext::kind::MessageRef;
use msgext::mock::callbacks::Delivery;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-webhook-token";
const APP: &str = "1400000000";

/// `msgext listen` on a free port; its URL.
fn listen(dir: &Path, lake: &Path, state: &str) -> (Child, String) {
    let mut child = Command::new(super::bin())
        .args([
            "listen",
            "--quiet",
            "--sdkappid",
            APP,
            "--bind",
            "127.0.0.1:0",
        ])
        .arg("--out")
        .arg(lake)
        .arg("--state-dir")
        .arg(dir.join(state))
        .env("MSGEXT_CALLBACK_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start msgext listen");
    let url = super::first_line(&mut child);
    (child, url)
}

fn stop(child: Child, started: Instant) -> Usage {
    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    wait_usage(child, started)
}

fn event(i: u64) -> ExtensionEvent {
    ExtensionEvent {
        message: MessageRef::new(
            Some("sender"),
            &format!("u{}", i % 50_000),
            &format!("{i}_1_1"),
        )
        .into(),
        operation: Operation::Set,
        pairs: vec![msgext::api::callback::CallbackPair {
            key: "vote".into(),
            value: format!("option-{}", i % 7),
            seq: 1 + (i as i64 % 9),
        }],
        seq: 1 + (i as i64 % 9),
        event_time_ms: 1_764_688_415_123,
    }
}

/// Callbacks at `rate` a second for `secs`, on `clients` connections at
/// most: the answers' latencies (ms) and how many were not OK.
async fn load(url: &str, rate: u64, secs: u64, clients: usize) -> (Vec<f64>, u64) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let delivery = Delivery {
        url: format!("{url}/im"),
        token: Some(TOKEN.into()),
        sdkappid: APP.parse().expect("app"),
        loss: 0.0,
        twice: 0.0,
        seed: 1,
    };
    let limit = Arc::new(tokio::sync::Semaphore::new(clients));
    let mut tasks = tokio::task::JoinSet::new();
    let start = tokio::time::Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(1);
    for t in 0..secs * 100 {
        tokio::time::sleep_until(start + tick * t as u32).await;
        for j in 0..per_tick {
            let (client, limit) = (client.clone(), limit.clone());
            let e = event(t * per_tick + j);
            let url = delivery.url_for(e.command(), chrono::Utc::now().timestamp());
            // Latency counts from when the request was due, waits for a connection included.
            let due = Instant::now();
            tasks.spawn(async move {
                let _permit = limit.acquire_owned().await;
                let r = client.post(url).body(e.body()).send().await;
                let ok = match r {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                (due.elapsed().as_secs_f64() * 1000.0, ok)
            });
        }
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        let (ms, ok) = done.expect("task");
        latencies.push(ms);
        failed += u64::from(!ok);
    }
    latencies.sort_by(f64::total_cmp);
    (latencies, failed)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// One listener, fsync on, at 2,000, 5,000 and 8,000 callbacks a second
/// (the load generator runs on the same two cores).
pub(crate) fn listen_bench(dir: &Path, rows: &mut Vec<(String, String)>) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let secs: u64 = std::env::var("MSGEXT_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    for rate in [2000u64, 5000, 8000] {
        let lake = dir.join(format!("listen-lake-{rate}"));
        let started = Instant::now();
        let (child, url) = listen(dir, &lake, &format!("listen-state-{rate}"));
        let (lat, failed) = rt.block_on(load(&url, rate, secs, 256));
        let u = stop(child, started);
        let took = lat.len() as f64 / secs as f64;
        rows.push((
            format!("listen at {rate}/s for {secs} s"),
            format!(
                "{took:.0}/s answered, {failed} not OK; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; listener CPU {:.1} s ({:.0}% of a core), peak RSS {:.1} MB (exit ok={})",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                pct(&lat, 1.0),
                u.cpu.as_secs_f64(),
                100.0 * u.cpu.as_secs_f64() / u.wall.as_secs_f64(),
                mb(u.max_rss_kb),
                u.ok
            ),
        ));
    }
}

/// The calls of a `--changed` night: N synthetic messages exported, 1%
/// changed with their callbacks to a listener, then `export --changed
/// --sweep-runs 7` (and, to compare, what a full list costs: N calls).
pub(crate) fn changed_bench(dir: &Path, rows: &mut Vec<(String, String)>) {
    let n: usize = std::env::var("MSGEXT_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let count = n.to_string();
    let base = ["--synthetic", count.as_str(), "--pairs", "4"];
    let lake = dir.join("changed-lake");
    let m = super::mock(dir, &base);
    let (u, s) = super::export_to(
        dir,
        &m,
        &lake.to_string_lossy(),
        &lake.join("_runs/n0/summary.json"),
        &["--rate", "0", "--run-id", "n0"],
        &[],
    );
    rows.push((
        format!("--changed bench, night 0: {n} messages in full"),
        format!(
            "{:.0} calls, {:.1} s (ok={})",
            super::n(&s["requests"]),
            u.wall.as_secs_f64(),
            u.ok
        ),
    ));
    drop(m);
    let started = Instant::now();
    let (listener, url) = listen(dir, &lake, "changed-listen");
    let changed = [
        &base[..],
        &[
            "--change",
            "0.01",
            "--callback-url",
            &url,
            "--callback-token",
            TOKEN,
        ],
    ]
    .concat();
    let (m, told) = mock_with_callbacks(dir, &changed);
    stop(listener, started);
    let started = Instant::now();
    let child = Command::new(super::bin())
        .args([
            "export",
            "--changed",
            "--quiet",
            "--sdkappid",
            APP,
            "--rate",
            "0",
            "--sweep-runs",
            "7",
        ])
        .arg("--endpoint")
        .arg(&m.url)
        .arg("--out")
        .arg(&lake)
        .env("MSGEXT_SECRET_KEY", KEY)
        .stderr(Stdio::piped())
        .spawn()
        .expect("export --changed");
    let u = wait_usage(child, started);
    let calls = last_summary_requests(&lake);
    rows.push((
        format!("--changed night: {n} known, 1% changed, K = 7"),
        format!(
            "{calls:.0} calls ({:.1}% of a full list; changed + N/7 = {:.0}), {:.1} s, CPU {:.1} s, peak RSS {:.1} MB (ok={}); callbacks: {told}",
            100.0 * calls / n as f64,
            n as f64 * 0.01 + (n as f64 / 7.0).ceil(),
            u.wall.as_secs_f64(),
            u.cpu.as_secs_f64(),
            mb(u.max_rss_kb),
            u.ok
        ),
    ));
}

/// `msgext mock` that posts callbacks: it and what it told of them.
fn mock_with_callbacks(dir: &Path, args: &[&str]) -> (super::Mock, String) {
    let mut child = Command::new(super::bin())
        .arg("mock")
        .args(args)
        .env("MSGEXT_SECRET_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start msgext mock");
    let url = super::first_line(&mut child);
    let told = BufReader::new(child.stderr.take().expect("stderr"))
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("callbacks to"))
        .unwrap_or_default();
    let _ = dir;
    (
        super::Mock {
            child,
            url: url.trim().to_owned(),
        },
        told,
    )
}

/// The calls of the newest finished run of the lake (summary.json).
fn last_summary_requests(lake: &Path) -> f64 {
    let mut newest: Option<(std::time::SystemTime, serde_json::Value)> = None;
    for e in std::fs::read_dir(lake.join("_runs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path().join("summary.json");
        let (Ok(meta), Ok(bytes)) = (std::fs::metadata(&p), std::fs::read(&p)) else {
            continue;
        };
        let Ok(t) = meta.modified() else { continue };
        if newest.as_ref().is_none_or(|(n, _)| t > *n) {
            newest = serde_json::from_slice(&bytes).ok().map(|v| (t, v));
        }
    }
    newest.map_or(0.0, |(_, v)| super::n(&v["requests"]))
}
