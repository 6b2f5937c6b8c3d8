//! What a run tells its user and its scheduler: `errors.csv` (every message
//! not exported and every invalid input row, re-feedable as `--input`),
//! `summary.json`, the human summary, and the progress bar. Counts only: the
//! decisions are made elsewhere.

use crate::input::{INVALID_INPUT, InvalidRow};
use crate::kind::{Kind, MessageId};
use crate::write::FileInfo;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// The columns of errors.csv after the kind's identity columns
/// (`KindSpec::columns`), which make it a valid `--input`.
pub(crate) const ERRORS_COLUMNS: [&str; 4] = ["error_code", "error_info", "attempts", "line"];

/// The header of errors.csv for a run of `kind`.
pub(crate) fn errors_header(kind: Kind) -> Vec<&'static str> {
    let mut h = kind.spec().columns().to_vec();
    h.extend(ERRORS_COLUMNS);
    h
}

/// Rows of errors.csv written to `W`: the run's spool (a local file), or
/// the final `_runs/<run_id>/errors.csv` being staged in the lake.
pub(crate) struct ErrorsCsv<W: std::io::Write = BufWriter<File>> {
    w: csv::Writer<W>,
    rows: u64,
}

impl ErrorsCsv<BufWriter<File>> {
    /// A new local file at `path`.
    pub(crate) fn create(path: &Path, kind: Kind) -> std::io::Result<Self> {
        ErrorsCsv::to_writer(BufWriter::new(File::create(path)?), kind)
    }

    /// Flush and fsync the local file.
    pub(crate) fn finish(self) -> std::io::Result<()> {
        self.into_inner()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
    }
}

impl<W: std::io::Write> ErrorsCsv<W> {
    /// errors.csv into `w`, starting with the header of `kind`.
    pub(crate) fn to_writer(w: W, kind: Kind) -> std::io::Result<Self> {
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(w);
        w.write_record(errors_header(kind))
            .map_err(std::io::Error::other)?;
        Ok(ErrorsCsv { w, rows: 0 })
    }

    /// The writer back, every row flushed into it.
    pub(crate) fn into_inner(self) -> std::io::Result<W> {
        self.w
            .into_inner()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    pub(crate) fn invalid_row(&mut self, r: &InvalidRow) -> std::io::Result<()> {
        self.record(&r.cells, INVALID_INPUT, &r.reason, 0, r.line)
    }

    pub(crate) fn message(
        &mut self,
        m: &MessageId,
        code: &str,
        info: &str,
        attempts: u32,
        line: u64,
    ) -> std::io::Result<()> {
        self.record(&m.identity().cells(), code, info, attempts, line)
    }

    pub(crate) fn row(&mut self, r: &crate::ledger::ErrorRow) -> std::io::Result<()> {
        self.message(&r.msg, &r.code, &r.info, r.attempts, r.line)
    }

    /// Copy the data rows of another errors file (written by `ErrorsCsv`).
    pub(crate) fn append_file(&mut self, path: &Path) -> std::io::Result<()> {
        let mut r = csv::Reader::from_path(path).map_err(std::io::Error::other)?;
        let mut rec = csv::ByteRecord::new();
        while r
            .read_byte_record(&mut rec)
            .map_err(std::io::Error::other)?
        {
            self.w
                .write_byte_record(&rec)
                .map_err(std::io::Error::other)?;
            self.rows += 1;
        }
        Ok(())
    }

    fn record(
        &mut self,
        id: &[String],
        code: &str,
        info: &str,
        attempts: u32,
        line: u64,
    ) -> std::io::Result<()> {
        let attempts = attempts.to_string();
        let line = line.to_string();
        let tail = [code, info, &attempts, &line];
        self.w
            .write_record(id.iter().map(String::as_str).chain(tail))
            .map_err(std::io::Error::other)?;
        self.rows += 1;
        Ok(())
    }
}

/// A text with every UserSig cut out: whatever follows `usersig=` (any
/// case) is dropped, so that a proxy page echoing the request URL, or an
/// error quoting it, never puts a credential in a report, a log or the lake.
/// Applied to every text a run keeps.
pub(crate) fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    const NEEDLE: &[u8] = b"usersig=";
    let at = text
        .as_bytes()
        .windows(NEEDLE.len())
        .position(|w| w.eq_ignore_ascii_case(NEEDLE));
    match at {
        None => std::borrow::Cow::Borrowed(text),
        Some(i) => std::borrow::Cow::Owned(format!("{}<redacted>", &text[..i + NEEDLE.len()])),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every valid message exported or confirmed not found.
    Complete,
    /// Finished, but some messages failed or some input rows were invalid.
    Partial,
    /// Stopped by an error that every call would hit (auth, region, plan) or by I/O.
    Failed,
    /// Stopped by Ctrl-C / SIGTERM.
    Interrupted,
}

impl RunStatus {
    /// The status as summary.json spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            RunStatus::Complete => "complete",
            RunStatus::Partial => "partial",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// The process exit code (DESIGN §4).
    pub fn exit_code(self) -> u8 {
        match self {
            RunStatus::Complete => 0,
            RunStatus::Partial => 3,
            RunStatus::Failed => 1,
            RunStatus::Interrupted => 130,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct InputSummary {
    pub(crate) rows: u64,
    pub(crate) invalid: u64,
    pub(crate) duplicates: u64,
    /// Lines of a re-fed errors.csv with a final answer (invalid input, not found), skipped.
    pub(crate) skipped: u64,
    /// Messages whose IDs had stray spaces around them, trimmed.
    pub(crate) trimmed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MessageSummary {
    pub ok: u64,
    pub not_found: u64,
    pub failed: u64,
    /// Not finished because the run stopped early (in errors.csv as
    /// `interrupted` or `aborted`, or with the code that stopped the run);
    /// the same command fetches them (it resumes the run).
    pub unfinished: u64,
    /// Settled by an earlier attempt of this run (skipped on resume).
    pub(crate) resumed: u64,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub(crate) run_id: String,
    /// The kind of message exported (`one_to_one` or `group`).
    pub(crate) kind: Kind,
    pub status: RunStatus,
    pub(crate) started_at: String,
    pub(crate) finished_at: String,
    pub elapsed_secs: f64,
    pub(crate) input_file: String,
    pub(crate) out: String,
    pub(crate) format: String,
    pub(crate) input: InputSummary,
    pub messages: MessageSummary,
    pub(crate) kv_rows: u64,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    /// fsyncs of the write-ahead log in this attempt (group commits of settled messages).
    pub wal_syncs: u64,
    /// The client-side limit in force at the end (calls/s; adapted to quota answers), null when off.
    pub rate_limit: Option<f64>,
    /// Why the run stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    pub(crate) errors_csv: String,
    pub(crate) files: Vec<FileInfo>,
    /// The run did not finish (no `_SUCCESS`): the same command resumes it.
    #[serde(skip)]
    pub(crate) resumable: bool,
}

impl Summary {
    /// One line for `--quiet` runs that did not complete: status, counts,
    /// why it stopped, and where the errors are.
    pub(crate) fn one_line(&self) -> String {
        let status = serde_json::to_value(self.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let mut s = format!(
            "run {} {status}: {} ok, {} not found, {} failed, {} unfinished, {} invalid input rows; errors: {}",
            self.run_id,
            self.messages.ok,
            self.messages.not_found,
            self.messages.failed,
            self.messages.unfinished,
            self.input.invalid,
            self.errors_csv
        );
        if let Some(r) = &self.stop_reason {
            s.push_str(&format!("; stopped: {r}"));
        }
        s
    }

    /// The human summary printed at the end of a run.
    pub(crate) fn human(&self) -> String {
        let secs = self.elapsed_secs.max(1e-9);
        let mut s = format!(
            "msgext run {} {}\n\
             messages   {} ok, {} not found, {} failed{}\n\
             input      {} rows, {} invalid, {} duplicates{}\n\
             rows       {} key-value rows\n\
             requests   {} ({} retries, {} rate-limited), {:.1} calls/s{}\n\
             time       {:.1} s\n\
             output     {}/{}/ and {}/{}/ ({}, {} files)\n\
             errors     {}\n",
            self.run_id,
            match self.status {
                RunStatus::Complete => "complete",
                RunStatus::Partial => "finished with errors",
                RunStatus::Failed => "FAILED",
                RunStatus::Interrupted => "interrupted",
            },
            self.messages.ok,
            self.messages.not_found,
            self.messages.failed,
            {
                let mut extra = String::new();
                if self.messages.unfinished > 0 {
                    extra.push_str(&format!(", {} unfinished", self.messages.unfinished));
                }
                if self.messages.resumed > 0 {
                    extra.push_str(&format!(
                        " ({} from an earlier attempt)",
                        self.messages.resumed
                    ));
                }
                extra
            },
            self.input.rows,
            self.input.invalid,
            self.input.duplicates,
            {
                let mut extra = String::new();
                if self.input.skipped > 0 {
                    extra.push_str(&format!(
                        ", {} rows of an earlier errors.csv skipped (invalid or not found)",
                        self.input.skipped
                    ));
                }
                if self.input.trimmed > 0 {
                    extra.push_str(&format!(", {} with spaces trimmed", self.input.trimmed));
                }
                extra
            },
            self.kv_rows,
            self.requests,
            self.retries,
            self.rate_limited,
            self.requests as f64 / secs,
            match self.rate_limit {
                Some(r) => format!(", limit {r:.0}/s"),
                None => String::new(),
            },
            self.elapsed_secs,
            self.out,
            self.kind.spec().tables()[0],
            self.out,
            self.kind.spec().tables()[1],
            self.format,
            self.files.len(),
            self.errors_csv,
        );
        if let Some(r) = &self.stop_reason {
            s.push_str(&format!("stopped    {r}\n"));
        }
        s
    }
}

/// `manifest.json`: every file of the run with rows, bytes and sha256.
pub(crate) fn manifest_json(summary: &Summary) -> Vec<u8> {
    // A map of strings and numbers always serializes.
    serde_json::to_vec_pretty(&serde_json::json!({
        "run_id": summary.run_id,
        "files": summary.files,
    }))
    .unwrap_or_default()
}

/// `summary.json`.
pub(crate) fn summary_json(summary: &Summary) -> Vec<u8> {
    // Plain fields of strings and numbers always serialize.
    serde_json::to_vec_pretty(summary).unwrap_or_default()
}

/// Counts the writer updates as it goes, read by the progress reporter.
#[derive(Debug, Default)]
pub(crate) struct LiveCounts {
    /// Input rows settled: exported, not found, failed, duplicate or invalid.
    pub(crate) settled: AtomicU64,
    pub(crate) kv_rows: AtomicU64,
    /// Messages failed (what an alert should count).
    pub(crate) errors: AtomicU64,
    /// Messages the API says do not exist (a final answer, not a failure).
    pub(crate) not_found: AtomicU64,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// An indicatif bar on stderr (a terminal).
    Bar,
    /// One JSON line on stderr every `JSON_EVERY` and one at the end (schedulers, log files).
    JsonLines,
    /// Nothing (`--quiet`, tests).
    Off,
}

/// How often a JSON progress line is written.
pub(crate) const JSON_EVERY: Duration = Duration::from_secs(10);

/// One look at a run in progress.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProgressView {
    pub(crate) settled: u64,
    pub(crate) total: u64,
    pub(crate) kv_rows: u64,
    pub(crate) requests: u64,
    /// Messages failed.
    pub(crate) errors: u64,
    pub(crate) not_found: u64,
    pub(crate) rate_limit: Option<f64>,
    pub(crate) elapsed: Duration,
}

impl ProgressView {
    pub(crate) fn calls_per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-3)
    }

    /// Seconds left at the pace so far; `None` before anything settled.
    pub(crate) fn eta_secs(&self) -> Option<f64> {
        (self.settled > 0).then(|| {
            let per_row = self.elapsed.as_secs_f64() / self.settled as f64;
            per_row * self.total.saturating_sub(self.settled) as f64
        })
    }

    /// The JSON progress line (`event` is `progress` or `done`).
    /// One JSON progress line: when (`ts`, UTC), which run, the counts, and
    /// at the end how the run ended (`status`).
    pub(crate) fn json(&self, event: &str, run_id: &str, status: Option<RunStatus>) -> String {
        let mut line = serde_json::json!({
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "run_id": run_id,
            "event": event,
            "rows_settled": self.settled,
            "rows_total": self.total,
            "kv_rows": self.kv_rows,
            "requests": self.requests,
            "calls_per_s": (self.calls_per_s() * 10.0).round() / 10.0,
            "rate_limit": self.rate_limit.map(|r| r.round()),
            "errors": self.errors,
            "not_found": self.not_found,
            "elapsed_secs": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "eta_secs": self.eta_secs().map(f64::round),
        });
        if let Some(status) = status {
            line["status"] = serde_json::json!(status);
        }
        line.to_string()
    }

    fn bar_message(&self) -> String {
        let limit = match self.rate_limit {
            Some(r) => format!(" (limit {r:.0})"),
            None => String::new(),
        };
        format!(
            "{} pairs  {:.0} calls/s{limit}  {} failed  {} not found",
            self.kv_rows,
            self.calls_per_s(),
            self.errors,
            self.not_found
        )
    }
}

/// Shows progress: a bar on a terminal, JSON lines elsewhere, or nothing.
pub(crate) struct Progress {
    mode: ProgressMode,
    run_id: String,
    bar: Option<ProgressBar>,
    last_json: Instant,
}

impl Progress {
    pub(crate) fn new(total: u64, mode: ProgressMode, run_id: &str) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} msgs  {msg}  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        Progress {
            mode,
            run_id: run_id.to_owned(),
            bar,
            last_json: Instant::now(),
        }
    }

    /// Called a few times a second.
    pub(crate) fn tick(&mut self, v: &ProgressView) {
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(v.settled);
                    bar.set_message(v.bar_message());
                }
            }
            ProgressMode::JsonLines if self.last_json.elapsed() >= JSON_EVERY => {
                self.last_json = Instant::now();
                eprintln!("{}", v.json("progress", &self.run_id, None));
            }
            ProgressMode::JsonLines | ProgressMode::Off => {}
        }
    }

    /// The last look, with how the run ended.
    pub(crate) fn finish(&mut self, v: &ProgressView, status: RunStatus) {
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.finish_and_clear();
                }
            }
            ProgressMode::JsonLines => {
                eprintln!("{}", v.json("done", &self.run_id, Some(status)))
            }
            ProgressMode::Off => {}
        }
    }
}

/// `s` as one word of a POSIX shell: as it is when plain, else in single quotes.
pub(crate) fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usersigs_are_cut_out_of_kept_texts() {
        let table = [
            ("no secret here", "no secret here"),
            (
                "body starts \"<a href=/v4/x?sdkappid=1&usersig=eJyr.Kx&random=2\"",
                "body starts \"<a href=/v4/x?sdkappid=1&usersig=<redacted>",
            ),
            ("GET /?UserSig=abc def", "GET /?UserSig=<redacted>"),
            ("USERSIG=", "USERSIG=<redacted>"),
            ("usersig", "usersig"),
        ];
        for (text, want) in table {
            assert_eq!(redact(text), want, "{text}");
        }
    }

    #[test]
    fn progress_lines_carry_counts_rate_and_eta() {
        let v = ProgressView {
            settled: 250,
            total: 1000,
            kv_rows: 12_345,
            requests: 300,
            errors: 2,
            not_found: 0,
            rate_limit: Some(187.6),
            elapsed: Duration::from_secs(2),
        };
        let j: serde_json::Value = serde_json::from_str(&v.json("progress", "r1", None)).unwrap();
        assert_eq!(j["event"], "progress");
        assert_eq!(j["run_id"], "r1");
        assert!(
            j.get("status").is_none(),
            "only the last line says how it ended"
        );
        let done: serde_json::Value =
            serde_json::from_str(&v.json("done", "r1", Some(RunStatus::Partial))).unwrap();
        assert_eq!(done["status"], "partial");
        assert_eq!(j["rows_settled"], 250);
        assert_eq!(j["calls_per_s"], 150.0);
        assert_eq!(j["rate_limit"], 188.0);
        assert_eq!(j["eta_secs"], 6.0);
        let start = ProgressView { settled: 0, ..v };
        assert!(start.eta_secs().is_none());
        assert!(v.bar_message().contains("limit 188"));
    }

    #[test]
    fn exit_codes_follow_the_design() {
        let table = [
            (RunStatus::Complete, 0),
            (RunStatus::Partial, 3),
            (RunStatus::Failed, 1),
            (RunStatus::Interrupted, 130),
        ];
        for (s, code) in table {
            assert_eq!(s.exit_code(), code);
        }
    }

    #[test]
    fn errors_csv_is_refeedable_input_for_each_kind() {
        use crate::kind::{GroupMessageRef, MessageRef};
        let table: [(Kind, MessageId, Vec<String>, &str); 2] = [
            (
                Kind::OneToOne,
                MessageRef::new(None, "b,c", "k\"1").into(),
                vec!["a".into(), "".into(), "k".into()],
                "From_Account,To_Account,MsgKey,error_code,error_info,attempts,line",
            ),
            (
                Kind::Group,
                GroupMessageRef::new("@TGS#1,x", 158).into(),
                vec!["@TGS#2".into(), "-1".into()],
                "GroupId,MsgSeq,error_code,error_info,attempts,line",
            ),
        ];
        for (kind, msg, cells, header) in table {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("errors.csv");
            let mut e = ErrorsCsv::create(&path, kind).unwrap();
            e.message(&msg, "10002", "internal, try again", 8, 7)
                .unwrap();
            e.invalid_row(&InvalidRow {
                line: 9,
                cells,
                reason: "bad".into(),
            })
            .unwrap();
            e.finish().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().next(), Some(header));
            let items: Vec<_> = crate::input::InputReader::open(&path)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(
                items,
                vec![
                    crate::input::InputItem::Message(crate::model::InputMessage {
                        msg,
                        line: 2,
                        trimmed: false,
                    }),
                    crate::input::InputItem::Skipped { line: 3 },
                ]
            );
        }
    }
}
