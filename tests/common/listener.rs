//! `msgext listen` as a process for the tests: started on port 0 (its URL
//! read from its first stdout line), posted to, stopped with SIGTERM or
//! killed; its events tables read back through the Delta kernel.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use msgext::api::callback::ExtensionEvent;
use msgext::kind::MessageId;
use msgext::mock::callbacks::{Delivered, Delivery};
use std::io::BufRead;
use std::path::{Path, PathBuf};

pub const TOKEN: &str = "test-webhook-token";
pub const APP: u64 = msgext::mock::DEMO_SDKAPPID;

pub struct Listener {
    pub child: std::process::Child,
    pub url: String,
    /// Its stderr, collected by a thread until it exits.
    stderr: std::thread::JoinHandle<String>,
}

/// The arguments of `msgext listen --out OUT --sdkappid APP --bind 127.0.0.1:0 --state-dir STATE`.
pub fn args(out: &Path, state: &Path, app: u64) -> Vec<String> {
    [
        "listen",
        "--out",
        &out.to_string_lossy(),
        "--sdkappid",
        &app.to_string(),
        "--bind",
        "127.0.0.1:0",
        "--state-dir",
        &state.to_string_lossy(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `msgext listen` (`args`) plus `extra`, with the token in the
/// environment and `env`.
pub fn start(out: &Path, state: &Path, extra: &[&str], env: &[(&str, &str)]) -> Listener {
    let mut args = args(out, state, APP);
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut cmd = super::msgext_command(&args, "unused", env);
    if !env.iter().any(|(k, _)| *k == "MSGEXT_CALLBACK_TOKEN") {
        cmd.env("MSGEXT_CALLBACK_TOKEN", TOKEN);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let mut first = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    let url = first.trim().to_owned();
    if !url.starts_with("http://") {
        let _ = child.kill();
        panic!(
            "listen did not start: {:?}\n{}",
            url,
            stderr.join().unwrap()
        );
    }
    Listener { child, url, stderr }
}

impl Listener {
    /// How callbacks reach it (signed with TOKEN).
    pub fn delivery(&self) -> Delivery {
        Delivery {
            url: format!("{}/im/callback", self.url),
            token: Some(TOKEN.into()),
            sdkappid: APP,
            loss: 0.0,
            twice: 0.0,
            seed: 1,
        }
    }

    pub async fn deliver(&self, events: &[ExtensionEvent]) -> Delivered {
        msgext::mock::callbacks::deliver(&self.delivery(), events).await
    }

    /// SIGTERM (or another signal), then wait: (exit code, stderr).
    pub async fn signal(mut self, signal: &str) -> (Option<i32>, String) {
        let sent = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let waited = tokio::task::spawn_blocking(move || {
            let status = self.child.wait().unwrap();
            (status.code(), self.stderr.join().unwrap())
        });
        tokio::time::timeout(super::RUN_GUARD, waited)
            .await
            .expect("the listener did not stop")
            .unwrap()
    }

    pub async fn stop(self) -> String {
        let (code, err) = self.signal("-TERM").await;
        assert_eq!(code, Some(0), "{err}");
        err
    }
}

/// One row of an events table: (message, operate_type, seq, key, value, key_seq).
pub type EventRow = (
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn text(b: &RecordBatch, name: &str, i: usize) -> Option<String> {
    let a = b.column_by_name(name)?.as_string::<i32>();
    a.is_valid(i).then(|| a.value(i).to_owned())
}

fn int(b: &RecordBatch, name: &str, i: usize) -> Option<i64> {
    let a = b.column_by_name(name)?.as_primitive::<Int64Type>();
    a.is_valid(i).then(|| a.value(i))
}

/// The rows of `out`'s events table of the one-to-one (or group) kind, sorted.
pub fn event_rows(out: &Path, group: bool) -> Vec<EventRow> {
    let table = out.join(if group {
        "group_extension_events"
    } else {
        "extension_events"
    });
    if !table.join("_delta_log").exists() {
        return Vec::new();
    }
    let mut rows = Vec::new();
    for b in super::local_delta_batches(&table) {
        for i in 0..b.num_rows() {
            let id = match group {
                false => format!(
                    "{}/{}/{}",
                    text(&b, "from_account", i).unwrap_or_default(),
                    text(&b, "to_account", i).unwrap(),
                    text(&b, "msg_key", i).unwrap()
                ),
                true => format!(
                    "{}/{}",
                    text(&b, "group_id", i).unwrap(),
                    int(&b, "msg_seq", i).unwrap()
                ),
            };
            assert_eq!(int(&b, "sdkappid", i), Some(APP as i64));
            rows.push((
                id,
                text(&b, "operate_type", i).unwrap(),
                int(&b, "seq", i).unwrap(),
                text(&b, "key", i),
                text(&b, "value", i),
                int(&b, "key_seq", i),
            ));
        }
    }
    rows.sort();
    rows
}

/// The rows the events table must hold for these events (each once).
pub fn rows_of(events: &[&ExtensionEvent]) -> Vec<EventRow> {
    let mut rows = Vec::new();
    for e in events {
        let id = match &e.message {
            MessageId::OneToOne(m) => {
                format!(
                    "{}/{}/{}",
                    m.from.clone().unwrap_or_default(),
                    m.to,
                    m.msg_key
                )
            }
            MessageId::Group(g) => format!("{}/{}", g.group_id, g.msg_seq),
        };
        let op = e.operation.name().to_owned();
        if e.pairs.is_empty() {
            rows.push((id.clone(), op.clone(), e.seq, None, None, None));
        }
        for p in &e.pairs {
            // A delete's value is null in the table (the callback's is empty).
            let value = (op != "delete").then(|| p.value.clone());
            rows.push((
                id.clone(),
                op.clone(),
                e.seq,
                Some(p.key.clone()),
                value,
                Some(p.seq),
            ));
        }
    }
    rows.sort();
    rows
}

/// A state folder for listener `n` beside the lake.
pub fn state(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("listener{n}"))
}
