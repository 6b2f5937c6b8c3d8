//! Job file (TOML, unknown keys rejected) + command-line flags + environment
//! → one validated `ExportPlan`. Flags override the job file. Relative paths
//! in a job file are relative to the job file's folder, so a cron entry works
//! from any working directory. No I/O here beyond what the caller read.

use crate::api::{Connection, Region, Secret};
use crate::cli::{ApiArgs, ExportArgs};
use crate::export::ExportPlan;
use crate::write::{Format, Out, TableFormat, WriteOptions};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub(crate) const DEFAULT_RATE: u32 = 200;
pub(crate) const DEFAULT_MAX_ATTEMPTS: u32 = 8;
pub(crate) const DEFAULT_IDENTIFIER: &str = "administrator";
pub(crate) const DEFAULT_GIVE_UP_MIN: f64 = 10.0;
/// The most attempts per call a run may be given.
pub(crate) const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// The highest client-side limit (calls/s); the API's quota is 200.
pub(crate) const MAX_RATE: u32 = 100_000;
/// A run id names a folder and is part of every file name: keep them short.
pub(crate) const MAX_RUN_ID_LEN: usize = 100;
/// The largest part file a run may be asked for (`--max-file-mb`).
pub(crate) const MAX_FILE_MB: f64 = 1_048_576.0;

/// The settings a job file may hold: the flags of `msgext export`, never secrets.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobFile {
    pub(crate) input: Option<PathBuf>,
    pub(crate) out: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) format: Option<Format>,
    pub(crate) table_format: Option<TableFormat>,
    pub(crate) region: Option<Region>,
    pub(crate) endpoint: Option<String>,
    pub(crate) sdkappid: Option<u64>,
    pub(crate) identifier: Option<String>,
    pub(crate) rate: Option<u32>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) quiet: Option<bool>,
    pub(crate) strict_input: Option<bool>,
    pub(crate) secret_key_file: Option<PathBuf>,
    pub(crate) max_file_mb: Option<f64>,
    pub(crate) give_up_after: Option<f64>,
    pub(crate) store_timeout: Option<f64>,
    pub(crate) full: Option<bool>,
    pub(crate) full_every: Option<String>,
    pub(crate) changed: Option<bool>,
    pub(crate) sweep_runs: Option<u32>,
    pub(crate) kind: Option<crate::cli::KindArg>,
    /// The settings of `msgext discover` (its connection is the keys above).
    pub(crate) discover: Option<DiscoverJob>,
    /// The settings of `msgext listen` (its lake and app are the keys above).
    pub(crate) listen: Option<ListenJob>,
    /// The settings of `msgext vacuum` (its lake is `out` above).
    pub(crate) vacuum: Option<VacuumJob>,
}

/// The `[vacuum]` table of a job file: the flags of `msgext vacuum`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VacuumJob {
    pub(crate) retain: Option<String>,
    pub(crate) keep_history: Option<String>,
    pub(crate) quiet: Option<bool>,
}

/// The `[listen]` table of a job file: the flags of `msgext listen`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenJob {
    pub(crate) bind: Option<String>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) commit_every: Option<String>,
    pub(crate) token_file: Option<PathBuf>,
    pub(crate) unsigned: Option<bool>,
    pub(crate) quiet: Option<bool>,
}

/// The `[discover]` table of a job file: the flags of `msgext discover`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoverJob {
    pub(crate) groups: Option<bool>,
    pub(crate) group_type: Option<String>,
    pub(crate) accounts: Option<PathBuf>,
    pub(crate) since: Option<String>,
    /// The list written [default: the job's `input`, the file the export reads].
    pub(crate) out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum JobError {
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl JobFile {
    /// Parse a job file's text; `path` names it in errors and anchors relative paths.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<JobFile, JobError> {
        refuse_secret_values(path, text, &[])?;
        let mut job: JobFile = toml::from_str(text).map_err(|e| JobError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [
            &mut job.input,
            &mut job.out,
            &mut job.state_dir,
            &mut job.secret_key_file,
        ]
        .into_iter()
        .chain(
            job.discover
                .iter_mut()
                .flat_map(|d| [&mut d.accounts, &mut d.out]),
        )
        .flatten()
        {
            if p.is_relative() && !p.to_string_lossy().contains("://") {
                *p = base.join(&*p);
            }
        }
        Ok(job)
    }
}

/// A job file error as "line N, key K: what is wrong", never quoting a
/// value: the value may be a secret typed into the wrong key (toml's own
/// message prints the offending line).
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|s| s.start.min(text.len()));
    let mut out = String::new();
    if let Some(at) = at {
        let line_no = text[..at].matches('\n').count() + 1;
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        out.push_str(&format!("line {line_no}"));
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            // A key that looks like a secret (pasted into the wrong place) is not quoted.
            if has_hex_run(key, 32) {
                out.push_str(SECRETS_ELSEWHERE);
                return out;
            }
            out.push_str(&format!(", key {key}"));
            if is_secret_key_name(key) {
                out.push_str(SECRETS_ELSEWHERE);
                return out;
            }
        }
        out.push_str(": ");
    }
    out.push_str(&without_values(e.message().trim()));
    out
}

const SECRETS_ELSEWHERE: &str =
    ": secrets do not go in job files; set MSGEXT_SECRET_KEY, or name a file with secret_key_file";

/// Whether a key's name says it holds a secret.
fn is_secret_key_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("secret") && k != "secret_key_file" || k.contains("usersig")
}

/// serde's message with the value it quotes left out: ``unknown variant
/// `x`, expected one of `a`, `b` `` becomes `not one of a, b`; in any other
/// message whatever is quoted (in `"` or `` ` ``) before "expected" becomes
/// `…`. What is expected comes from msgext, never from the file.
fn without_values(msg: &str) -> String {
    let (what, expected) = match msg.split_once(", expected ") {
        Some((w, x)) => (w, Some(x.replace('`', ""))),
        None => (msg, None),
    };
    if what.starts_with("unknown variant") {
        let choices = expected.unwrap_or_default();
        let choices = match choices.strip_prefix("one of ") {
            Some(list) => list.to_owned(),
            None => choices.replace(" or ", ", "),
        };
        return format!("not one of {choices}");
    }
    let mut out = String::with_capacity(msg.len());
    let mut closing = None;
    for c in what.chars() {
        match closing {
            None if c == '"' || c == '`' => {
                out.push('…');
                closing = Some(c);
            }
            None => out.push(c),
            Some(q) if c == q => closing = None,
            Some(_) => {}
        }
    }
    if let Some(x) = expected {
        out.push_str(", expected ");
        out.push_str(&x);
    }
    out
}

/// Refuse a job file that holds a secret in any key: a value that is one of
/// `secrets` (the environment's key, `secret_key_file`'s) or that looks like
/// a secret key (64 hex characters). Told by line and key, never by value,
/// and before any call (an identifier goes into every call's URL).
pub(crate) fn refuse_secret_values(
    path: &Path,
    text: &str,
    secrets: &[&str],
) -> Result<(), JobError> {
    // The key a line belongs to: its own, or the last one above it (the
    // lines of a multi-line string or array carry no key of their own).
    let mut key = "";
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if let Some((k, _)) = line.split_once('=')
            && !k.contains(['"', '\''])
        {
            key = k.trim();
        }
        let holds = |text: &str| {
            secrets
                .iter()
                .map(|s| s.trim())
                .any(|s| s.len() >= 8 && text.contains(s))
                || has_hex_run(text, 64)
        };
        if holds(line) {
            // A key named after the secret is not quoted either.
            let key = match holds(key) {
                true => String::new(),
                false => format!(", key {key}"),
            };
            return Err(JobError::Parse {
                path: path.to_owned(),
                message: format!("line {}{key}: holds a secret key{SECRETS_ELSEWHERE}", i + 1),
            });
        }
    }
    Ok(())
}

/// Whether `text` holds a run of at least `n` hex digits.
fn has_hex_run(text: &str, n: usize) -> bool {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= n {
            return true;
        }
    }
    false
}

/// What the environment supplies (read by the caller).
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    pub(crate) secret_key: Option<String>,
    pub(crate) usersig: Option<String>,
    /// The contents of `--secret-key-file`, if one was named and read.
    pub(crate) secret_key_file: Option<String>,
    /// `HOME` and `XDG_STATE_HOME`, where a bucket's default state folder lives.
    pub(crate) state_vars: std::collections::HashMap<String, String>,
}

impl Env {
    /// The variables a plan reads, from the process's environment.
    pub(crate) fn state_vars_from_process() -> std::collections::HashMap<String, String> {
        ["HOME", "XDG_STATE_HOME"]
            .into_iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v)))
            .collect()
    }
}

/// The secret key file named by flags or job file, for the caller to read.
pub(crate) fn secret_key_file(args: &ApiArgs, job: &JobFile) -> Option<PathBuf> {
    args.secret_key_file
        .clone()
        .or_else(|| job.secret_key_file.clone())
}

/// The connection flags over the job file's, checked.
pub(crate) fn connection(args: &ApiArgs, job: &JobFile, env: &Env) -> Result<Connection, JobError> {
    Ok(Connection {
        sdkappid: required(args.sdkappid.or(job.sdkappid), "--sdkappid")?,
        base_url: base_url(args, job)?,
        identifier: identifier(args, job)?,
        rate: rate(args, job)?,
        max_attempts: max_attempts(args, job)?,
        give_up_after: give_up_after(args, job)?,
        secret: secret(env)?,
    })
}

/// Merge flags over the job file and check everything a run needs: one
/// small validator per setting, each naming the flag in its error.
pub(crate) fn plan(args: &ExportArgs, job: &JobFile, env: &Env) -> Result<ExportPlan, JobError> {
    let input = required(args.input.clone().or_else(|| job.input.clone()), "--input")?;
    plan_with(args, job, env, input)
}

/// `export --changed`: the export's settings (its lists made from the
/// lake), the sweep and the kinds; `--input`, when given, adds its rows.
pub(crate) fn changed_plan(
    args: &ExportArgs,
    job: &JobFile,
    env: &Env,
) -> Result<crate::export::changed::ChangedPlan, JobError> {
    if args.run_id.is_some() {
        return Err(invalid(
            "--run-id does not go with --changed: its runs are named, and resumed, from the state folder".into(),
        ));
    }
    let input = args.input.clone().or_else(|| job.input.clone());
    let base = plan_with(args, job, env, PathBuf::new())?;
    if base.table_format == TableFormat::Plain || base.format == Format::Csv {
        return Err(invalid(
            "--changed reads the lake's Delta tables (events, current): it needs Parquet in Delta tables".into(),
        ));
    }
    let kinds = match args.kind.or(job.kind) {
        None => crate::kind::Kind::ALL.to_vec(),
        Some(crate::cli::KindArg::OneToOne) => vec![crate::kind::Kind::OneToOne],
        Some(crate::cli::KindArg::Group) => vec![crate::kind::Kind::Group],
    };
    Ok(crate::export::changed::ChangedPlan {
        base,
        sweep_runs: args
            .sweep_runs
            .or(job.sweep_runs)
            .unwrap_or(DEFAULT_SWEEP_RUNS),
        kinds,
        input,
    })
}

/// `--sweep-runs` by default: every known message read once a week of nightly runs.
pub(crate) const DEFAULT_SWEEP_RUNS: u32 = 7;

fn plan_with(
    args: &ExportArgs,
    job: &JobFile,
    env: &Env,
    input: PathBuf,
) -> Result<ExportPlan, JobError> {
    let out = out(args, job)?;
    Ok(ExportPlan {
        input,
        state_dir: state_dir(args, job, &out, env)?,
        out,
        format: format(args, job),
        table_format: table_format(args, job)?,
        api: connection(&args.api, job, env)?,
        concurrency: concurrency(args, job)?,
        run_id: run_id(args)?,
        quiet: args.quiet || job.quiet.unwrap_or(false),
        strict_input: args.strict_input || job.strict_input.unwrap_or(false),
        write: write_options(args, job)?,
        full: crate::table::FullReads {
            always: args.full || job.full.unwrap_or(false),
            every: full_every(job)?,
        },
        changed: None,
    })
}

fn format(args: &ExportArgs, job: &JobFile) -> Format {
    args.format.or(job.format).unwrap_or(Format::Parquet)
}

/// Delta for Parquet unless asked otherwise; CSV has no Delta tables.
fn table_format(args: &ExportArgs, job: &JobFile) -> Result<TableFormat, JobError> {
    match (format(args, job), args.table_format.or(job.table_format)) {
        (Format::Csv, Some(TableFormat::Delta)) => Err(invalid(
            "--table-format delta needs --format parquet: Delta tables hold Parquet files".into(),
        )),
        (Format::Csv, _) => Ok(TableFormat::Plain),
        (Format::Parquet, t) => Ok(t.unwrap_or(TableFormat::Delta)),
    }
}

fn invalid(message: String) -> JobError {
    JobError::Invalid(message)
}

fn required<T>(value: Option<T>, flag: &str) -> Result<T, JobError> {
    value.ok_or_else(|| invalid(format!("{flag} is required (as a flag or in the job file)")))
}

fn out(args: &ExportArgs, job: &JobFile) -> Result<Out, JobError> {
    let out = required(args.out.clone().or_else(|| job.out.clone()), "--out")?;
    Out::parse(&out.to_string_lossy()).map_err(|e| invalid(e.to_string()))
}

fn state_dir(args: &ExportArgs, job: &JobFile, out: &Out, env: &Env) -> Result<PathBuf, JobError> {
    match args.state_dir.clone().or_else(|| job.state_dir.clone()) {
        Some(d) => Ok(d),
        None => out
            .default_state_dir(&|k| env.state_vars.get(k).cloned())
            .map_err(|e| invalid(e.to_string())),
    }
}

/// A region given by flag overrides an endpoint from the job file and vice versa.
fn base_url(args: &ApiArgs, job: &JobFile) -> Result<String, JobError> {
    let url = match (&args.region, &args.endpoint, &job.region, &job.endpoint) {
        (Some(r), _, _, _) => r.base_url(),
        (None, Some(e), _, _) => e.clone(),
        (None, None, Some(_), Some(_)) => {
            return Err(invalid(
                "the job file gives both region and endpoint; keep one".into(),
            ));
        }
        (None, None, Some(r), None) => r.base_url(),
        (None, None, None, Some(e)) => e.clone(),
        (None, None, None, None) => return required(None, "--region (or --endpoint)"),
    };
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid(format!(
            "--endpoint must be an http(s) URL, not {url:?}"
        )));
    }
    Ok(url)
}

fn identifier(args: &ApiArgs, job: &JobFile) -> Result<String, JobError> {
    let identifier = args
        .identifier
        .clone()
        .or_else(|| job.identifier.clone())
        .unwrap_or_else(|| DEFAULT_IDENTIFIER.to_owned());
    if identifier.is_empty() {
        return Err(invalid("--identifier must not be empty".into()));
    }
    Ok(identifier)
}

fn concurrency(args: &ExportArgs, job: &JobFile) -> Result<Option<usize>, JobError> {
    match args.concurrency.or(job.concurrency) {
        Some(c) if c == 0 || c > 4096 => {
            Err(invalid(format!("--concurrency must be 1 to 4096, not {c}")))
        }
        c => Ok(c),
    }
}

fn max_attempts(args: &ApiArgs, job: &JobFile) -> Result<u32, JobError> {
    let n = args
        .max_attempts
        .or(job.max_attempts)
        .unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS_LIMIT).contains(&n) {
        return Err(invalid(format!(
            "--max-attempts must be 1 to {MAX_ATTEMPTS_LIMIT}, not {n}"
        )));
    }
    Ok(n)
}

fn rate(args: &ApiArgs, job: &JobFile) -> Result<u32, JobError> {
    let rate = args.rate.or(job.rate).unwrap_or(DEFAULT_RATE);
    if rate > MAX_RATE {
        return Err(invalid(format!(
            "--rate must be 0 (no limit) to {MAX_RATE} calls/s, not {rate}"
        )));
    }
    Ok(rate)
}

fn run_id(args: &ExportArgs) -> Result<Option<String>, JobError> {
    let Some(id) = &args.run_id else {
        return Ok(None);
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if id.is_empty() || id.len() > MAX_RUN_ID_LEN || !id.chars().all(allowed) || id.starts_with('.')
    {
        return Err(invalid(format!(
            "--run-id {id:?}: 1 to {MAX_RUN_ID_LEN} letters, digits, '-', '_' and '.', not starting with '.' (it names folders and files)"
        )));
    }
    Ok(Some(id.clone()))
}

fn write_options(args: &ExportArgs, job: &JobFile) -> Result<WriteOptions, JobError> {
    let mut write = WriteOptions::default();
    if let Some(mb) = args.max_file_mb.or(job.max_file_mb) {
        if !(mb > 0.0 && mb <= MAX_FILE_MB) {
            return Err(invalid(format!(
                "--max-file-mb must be more than 0 and at most {MAX_FILE_MB} (1 TiB), not {mb}"
            )));
        }
        write.max_file_bytes = (mb * 1024.0 * 1024.0) as u64;
    }
    if let Some(s) = args.store_timeout.or(job.store_timeout) {
        // Under a second no request can finish; over an hour a hang goes unseen.
        if !(1.0..=3600.0).contains(&s) {
            return Err(invalid(format!(
                "--store-timeout must be 1 to 3600 seconds, not {s}"
            )));
        }
        write.store_timeout = std::time::Duration::from_secs_f64(s);
    }
    Ok(write)
}

/// At least a second (the breaker looks 5 times a second), at most a week.
fn give_up_after(args: &ApiArgs, job: &JobFile) -> Result<std::time::Duration, JobError> {
    let minutes = args
        .give_up_after
        .or(job.give_up_after)
        .unwrap_or(DEFAULT_GIVE_UP_MIN);
    if !(1.0 / 60.0..=7.0 * 24.0 * 60.0).contains(&minutes) {
        return Err(invalid(format!(
            "--give-up-after must be 1 second (0.0167) to 10080 minutes, not {minutes}"
        )));
    }
    Ok(std::time::Duration::from_secs_f64(minutes * 60.0))
}

/// A message's last full read may be this old [default: 7 days]. The job
/// key `full_every`: `7d`, `36h`, `90m`, or `never`.
pub const DEFAULT_FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

fn full_every(job: &JobFile) -> Result<Option<std::time::Duration>, JobError> {
    let Some(text) = job.full_every.as_deref() else {
        return Ok(Some(DEFAULT_FULL_EVERY));
    };
    parse_every(text).map_err(|()| {
        // The value is not quoted back: a job file's values are never echoed.
        invalid(
            "full_every: give a number of days, hours or minutes (7d, 36h, 90m), or never".into(),
        )
    })
}

/// `7d`, `36h`, `90m`, `30s` (a positive whole number), or `never`.
fn parse_every(text: &str) -> Result<Option<std::time::Duration>, ()> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let unit = match t.chars().last() {
        Some('d') => 86_400,
        Some('h') => 3_600,
        Some('m') => 60,
        Some('s') => 1,
        _ => return Err(()),
    };
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| ())?;
    match n {
        0 => Err(()),
        n => Ok(Some(std::time::Duration::from_secs(n.saturating_mul(unit)))),
    }
}

/// `msgext discover`'s flags over the job file's `[discover]` table and its
/// connection keys; the list goes to `--out`, else the table's `out`, else
/// the job's `input` (the file the export reads).
pub(crate) fn discover_plan(
    args: &crate::cli::DiscoverArgs,
    job: &JobFile,
    env: &Env,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<crate::discover::DiscoverPlan, JobError> {
    use crate::discover::{DiscoverPlan, ListOut, Source};
    let table = job.discover.clone().unwrap_or_default();
    let groups = args.groups || table.groups.unwrap_or(false);
    let accounts = args.accounts.clone().or(table.accounts);
    let source = match (groups, accounts) {
        (true, Some(_)) => {
            return Err(invalid(
                "give --groups or --accounts, not both: one list holds one kind of message".into(),
            ));
        }
        (false, None) => {
            return Err(invalid(
                "give --groups (every group's messages) or --accounts FILE.csv (one-to-one messages)"
                    .into(),
            ));
        }
        (true, None) => Source::Groups {
            types: group_types(args.group_type.as_deref().or(table.group_type.as_deref()))?,
        },
        (false, Some(_)) if args.group_type.is_some() || table.group_type.is_some() => {
            return Err(invalid(
                "--group-type is for --groups; --accounts lists one-to-one messages".into(),
            ));
        }
        (false, Some(file)) => Source::Accounts(file),
    };
    let since = match args.since.as_deref().or(table.since.as_deref()) {
        None => now.timestamp() - DEFAULT_SINCE.as_secs() as i64,
        Some(text) => parse_since(text, now)?,
    };
    let out = args.out.clone().or(table.out).or_else(|| job.input.clone());
    Ok(DiscoverPlan {
        api: connection(&args.api, job, env)?,
        source,
        since,
        out: ListOut::parse(&required(out, "--out")?),
        quiet: args.quiet || job.quiet.unwrap_or(false),
    })
}

/// `msgext listen`'s flags over the job file's `[listen]` table and its
/// `out` and `sdkappid`. `token` is the webhook token already read (from
/// `--token-file`, the table's `token_file`, or MSGEXT_CALLBACK_TOKEN).
pub(crate) fn listen_plan(
    args: &crate::cli::ListenArgs,
    job: &JobFile,
    token: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<crate::listen::ListenPlan, JobError> {
    let table = job.listen.clone().unwrap_or_default();
    let out = required(args.out.clone().or_else(|| job.out.clone()), "--out")?;
    let out = Out::parse(&out.to_string_lossy()).map_err(|e| invalid(e.to_string()))?;
    let unsigned = args.unsigned || table.unsigned.unwrap_or(false);
    let token = match (token, unsigned) {
        (Some(_), true) => {
            return Err(invalid(
                "a webhook token is set and --unsigned is given: give one (an app that signs its callbacks needs the token)".into(),
            ));
        }
        (None, false) => {
            return Err(invalid(
                "no webhook token: set MSGEXT_CALLBACK_TOKEN or --token-file to the console's webhook authentication token, or give --unsigned if the app signs nothing".into(),
            ));
        }
        (t, _) => t,
    };
    let bind = match args.bind {
        Some(b) => b,
        None => {
            let text = table.bind.as_deref().unwrap_or("127.0.0.1:8080");
            text.parse().map_err(|_| {
                invalid(format!(
                    "[listen] bind = {text:?}: give ADDR:PORT, such as 0.0.0.0:8080"
                ))
            })?
        }
    };
    let every = args
        .commit_every
        .as_deref()
        .or(table.commit_every.as_deref());
    let commit_every = match every.map(|t| (t, parse_every(t))) {
        None => std::time::Duration::from_secs(10),
        Some((_, Ok(Some(d)))) => d,
        Some((t, _)) => {
            return Err(invalid(format!("--commit-every {t:?}: give 10s, 5m or 1h")));
        }
    };
    let state_dir = match args.state_dir.clone().or(table.state_dir) {
        Some(d) => d,
        None => match &out {
            Out::Dir(d) => d.join("_listen"),
            Out::Url(_) => out
                .default_state_dir(env)
                .map_err(|e| invalid(e.to_string()))?
                .join("listen"),
        },
    };
    Ok(crate::listen::ListenPlan {
        out,
        sdkappid: required(args.sdkappid.or(job.sdkappid), "--sdkappid")?,
        bind,
        state_dir,
        commit_every,
        token,
        quiet: args.quiet || table.quiet.unwrap_or(false),
        store_timeout: crate::write::WriteOptions::default().store_timeout,
    })
}

/// `msgext vacuum`'s flags over the job file's `[vacuum]` table: the plan,
/// and the lake (`out`).
pub(crate) fn vacuum_plan(
    args: &crate::cli::VacuumArgs,
    job: &JobFile,
) -> Result<(Out, crate::vacuum::VacuumPlan), JobError> {
    use crate::vacuum::{DEFAULT_RETAIN, MIN_RETAIN};
    let table = job.vacuum.clone().unwrap_or_default();
    let out = required(args.out.clone().or_else(|| job.out.clone()), "--out")?;
    let out = Out::parse(&out.to_string_lossy()).map_err(|e| invalid(e.to_string()))?;
    let retain = match args.retain.as_deref().or(table.retain.as_deref()) {
        None => DEFAULT_RETAIN,
        Some(t) => parse_span(t)
            .ok_or_else(|| invalid(format!("--retain {t:?}: give a span such as 36h or 7d")))?,
    };
    if retain < MIN_RETAIN && !args.force {
        return Err(invalid(format!(
            "--retain {}h is under 24h: a running export's uploaded files and readers on a recent version need them; give --force if nothing writes to or reads the lake now (nothing deleted)",
            retain.as_secs() / 3600
        )));
    }
    let keep_history = match args
        .keep_history
        .as_deref()
        .or(table.keep_history.as_deref())
    {
        None => None,
        Some(t) if t.trim().eq_ignore_ascii_case("all") => None,
        Some(t) => Some(parse_span(t).filter(|d| !d.is_zero()).ok_or_else(|| {
            invalid(format!(
                "--keep-history {t:?}: give a span such as 90d, or all"
            ))
        })?),
    };
    Ok((
        out,
        crate::vacuum::VacuumPlan {
            retain,
            keep_history,
            dry_run: args.dry_run,
            quiet: args.quiet || table.quiet.unwrap_or(false),
        },
    ))
}

/// `msgext verify`'s flags over the job file: the lake and the plan (the
/// connection only with `--sample`).
pub(crate) fn verify_plan(
    args: &crate::cli::VerifyArgs,
    job: &JobFile,
    env: &Env,
) -> Result<(Out, crate::verify::VerifyPlan), JobError> {
    use crate::verify::{Sample, SamplePlan, VerifyPlan};
    let out = required(args.out.clone().or_else(|| job.out.clone()), "--out")?;
    let out = Out::parse(&out.to_string_lossy()).map_err(|e| invalid(e.to_string()))?;
    let sample = match args.sample.as_deref() {
        None => None,
        Some(t) => {
            let sample = Sample::parse(t).ok_or_else(|| {
                invalid(format!(
                    "--sample {t:?}: give a count (100), a share (5%) or all"
                ))
            })?;
            Some(SamplePlan {
                sample,
                api: connection(&args.api, job, env)?,
                drift_dir: args.drift_dir.clone().unwrap_or_else(|| PathBuf::from(".")),
            })
        }
    };
    Ok((
        out,
        VerifyPlan {
            sample,
            quiet: args.quiet || job.quiet.unwrap_or(false),
        },
    ))
}

/// A span such as `36h` or `7d` (`0h` allowed), in whole units.
fn parse_span(text: &str) -> Option<std::time::Duration> {
    let t = text.trim();
    if t.starts_with('0') && t[..t.len().saturating_sub(1)].bytes().all(|b| b == b'0') {
        return matches!(t.chars().last(), Some('d' | 'h' | 'm' | 's'))
            .then_some(std::time::Duration::ZERO);
    }
    parse_every(t).ok().flatten()
}

/// The history APIs keep 7 days by default: discover looks that far back.
pub(crate) const DEFAULT_SINCE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// `--since`: `24h`, `3d`, `90m` back from `now`, or an RFC 3339 time, not
/// in the future; as Unix seconds.
pub(crate) fn parse_since(text: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, JobError> {
    let at = match parse_every(text) {
        Ok(Some(back)) => now.timestamp().saturating_sub(back.as_secs() as i64),
        _ => match chrono::DateTime::parse_from_rfc3339(text.trim()) {
            Ok(t) => t.timestamp(),
            Err(_) => {
                return Err(invalid(format!(
                    "--since {text:?}: give 24h, 3d, 90m, or an RFC 3339 time such as 2026-12-01T00:00:00Z"
                )));
            }
        },
    };
    if at > now.timestamp() {
        return Err(invalid(format!("--since {text:?} is in the future")));
    }
    Ok(at)
}

/// The `GroupType` names to list: the one asked for (the console's names
/// Work and Meeting too), or every type whose messages carry extensions.
pub(crate) fn group_types(asked: Option<&str>) -> Result<Vec<String>, JobError> {
    use crate::api::history::EXTENSION_GROUP_TYPES;
    let Some(asked) = asked else {
        return Ok(EXTENSION_GROUP_TYPES.map(String::from).to_vec());
    };
    let name = match asked.trim().to_ascii_lowercase().as_str() {
        "private" | "work" => "Private",
        "public" => "Public",
        "chatroom" | "meeting" => "ChatRoom",
        "community" => "Community",
        "avchatroom" | "bchatroom" => {
            return Err(invalid(format!(
                "--group-type {asked}: these groups keep no history and carry no message extensions"
            )));
        }
        _ => {
            return Err(invalid(format!(
                "--group-type {asked:?}: one of Private (Work), Public, ChatRoom (Meeting), Community"
            )));
        }
    };
    Ok(vec![name.to_owned()])
}

/// The secret key file's, else the environment's key, else a ready UserSig.
fn secret(env: &Env) -> Result<Secret, JobError> {
    let secret = match (&env.secret_key_file, &env.secret_key, &env.usersig) {
        (Some(k), _, _) | (None, Some(k), _) => Secret::Key(k.trim().to_owned()),
        (None, None, Some(s)) => Secret::UserSig(s.trim().to_owned()),
        (None, None, None) => {
            return Err(invalid(
                "no credentials: set MSGEXT_SECRET_KEY, give --secret-key-file, or set a ready MSGEXT_USERSIG".into(),
            ));
        }
    };
    if matches!(&secret, Secret::Key(k) | Secret::UserSig(k) if k.is_empty()) {
        return Err(invalid("the secret key (or UserSig) given is empty".into()));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_hours_days_minutes_or_a_time_and_never_the_future() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
            .unwrap()
            .to_utc();
        let t = now.timestamp();
        let table: [(&str, Result<i64, &str>); 8] = [
            ("24h", Ok(t - 86_400)),
            ("3d", Ok(t - 3 * 86_400)),
            ("90m", Ok(t - 5_400)),
            ("2026-12-01T00:00:00Z", Ok(t - 36 * 3_600)),
            ("2026-12-01T08:00:00+08:00", Ok(t - 36 * 3_600)),
            ("2026-12-03T00:00:00Z", Err("in the future")),
            ("yesterday", Err("24h, 3d, 90m")),
            ("never", Err("24h, 3d, 90m")),
        ];
        for (text, want) in table {
            match (parse_since(text, now), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn group_types_are_the_api_names_and_only_those_with_history() {
        assert_eq!(
            group_types(None).unwrap(),
            ["Private", "Public", "ChatRoom", "Community"]
        );
        assert_eq!(group_types(Some("work")).unwrap(), ["Private"]);
        assert_eq!(group_types(Some("Meeting")).unwrap(), ["ChatRoom"]);
        assert_eq!(group_types(Some("Public")).unwrap(), ["Public"]);
        let e = group_types(Some("AVChatRoom")).unwrap_err().to_string();
        assert!(e.contains("keep no history"), "{e}");
        let e = group_types(Some("club")).unwrap_err().to_string();
        assert!(e.contains("Private (Work)"), "{e}");
    }

    /// The nightly pair in one job file: discover writes the file the
    /// export reads, unless its table names another.
    #[test]
    fn a_discover_table_writes_the_job_s_input_by_default() {
        let job = JobFile::parse(
            Path::new("/etc/msgext/nightly.toml"),
            "input = \"list.csv\"\nout = \"/lake\"\nsdkappid = 1\nregion = \"china\"\n[discover]\ngroups = true\nsince = \"1d\"\n",
        )
        .unwrap();
        let now = chrono::Utc::now();
        let args = crate::cli::DiscoverArgs::default();
        let p = discover_plan(&args, &job, &env(), now).unwrap();
        assert_eq!(
            p.out,
            crate::discover::ListOut::File(PathBuf::from("/etc/msgext/list.csv"))
        );
        assert_eq!(p.since, now.timestamp() - 86_400);
        assert!(
            matches!(p.source, crate::discover::Source::Groups { ref types } if types.len() == 4)
        );
        // The export still plans from the same file.
        assert!(plan(&ExportArgs::default(), &job, &env()).is_ok());
        let both = crate::cli::DiscoverArgs {
            accounts: Some("a.csv".into()),
            ..args.clone()
        };
        let e = discover_plan(&both, &job, &env(), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not both"), "{e}");
        let e = discover_plan(&args, &JobFile::default(), &env(), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--groups"), "{e}");
        // A type given on the command line narrows the job file's groups.
        let public = crate::cli::DiscoverArgs {
            group_type: Some("public".into()),
            ..args.clone()
        };
        let p = discover_plan(&public, &job, &env(), now).unwrap();
        assert_eq!(
            p.source,
            crate::discover::Source::Groups {
                types: vec!["Public".into()]
            }
        );
        let accounts_typed = crate::cli::DiscoverArgs {
            accounts: Some("a.csv".into()),
            group_type: Some("public".into()),
            ..crate::cli::DiscoverArgs::default()
        };
        let e = discover_plan(&accounts_typed, &JobFile::default(), &env(), now)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--group-type is for --groups"), "{e}");
        let bad = JobFile::parse(Path::new("j.toml"), "[discover]\ngroup = true\n").unwrap_err();
        assert!(bad.to_string().contains("group"), "{bad}");
    }

    #[test]
    fn full_every_takes_days_hours_minutes_or_never() {
        let d = |s: u64| Ok(Some(std::time::Duration::from_secs(s)));
        let table = [
            ("7d", d(604_800)),
            ("36h", d(129_600)),
            ("90m", d(5_400)),
            (" never ", Ok(None)),
            ("0d", Err(())),
            ("7", Err(())),
            ("-1d", Err(())),
            ("1.5d", Err(())),
            ("", Err(())),
        ];
        for (text, want) in table {
            assert_eq!(parse_every(text), want, "{text:?}");
        }
        let job = JobFile {
            full_every: Some("weekly".into()),
            ..JobFile::default()
        };
        let e = full_every(&job).unwrap_err().to_string();
        assert!(e.contains("full_every") && e.contains("7d"), "{e}");
        assert!(!e.contains("weekly"), "the value is not quoted back: {e}");
        assert_eq!(
            full_every(&JobFile::default()),
            Ok(Some(DEFAULT_FULL_EVERY))
        );
    }

    fn env() -> Env {
        Env {
            secret_key: Some("k".into()),
            ..Env::default()
        }
    }

    #[test]
    fn every_example_job_file_loads_and_plans() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let (mut n, mut discovering, mut listening, mut vacuuming) = (0, 0, 0, 0);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let job = JobFile::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
            let args = ExportArgs::default();
            match job.changed {
                Some(true) => changed_plan(&args, &job, &env()).map(drop),
                _ => plan(&args, &job, &env()).map(drop),
            }
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if job.listen.is_some() {
                let args = crate::cli::ListenArgs::default();
                let p = listen_plan(&args, &job, Some("token".into()), &|_| None)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(p.bind.port(), 8080);
                listening += 1;
            }
            if job.vacuum.is_some() {
                let args = crate::cli::VacuumArgs::default();
                let (_, p) =
                    vacuum_plan(&args, &job).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(p.retain >= crate::vacuum::MIN_RETAIN);
                vacuuming += 1;
            }
            if job.discover.is_some() {
                let args = crate::cli::DiscoverArgs::default();
                discover_plan(&args, &job, &env(), chrono::Utc::now())
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                discovering += 1;
            }
            n += 1;
        }
        assert!(n >= 2, "jobs/ holds example job files");
        assert!(discovering >= 1, "and one of the nightly pair");
        assert!(listening >= 1, "and one of change capture");
        assert!(vacuuming >= 1, "and one that vacuums");
    }

    #[test]
    fn vacuum_flags_over_the_job_table() {
        let day = 86_400;
        let job = JobFile::parse(
            Path::new("j.toml"),
            "out = \"/lake\"\n[vacuum]\nretain = \"3d\"\nkeep_history = \"90d\"\n",
        )
        .unwrap();
        // (flags, force, retain in seconds or the error's flag, keep_history)
        type Case<'a> = (&'a [&'a str], bool, Result<u64, &'a str>, Option<u64>);
        let cases: [Case; 9] = [
            (&[], false, Ok(3 * day), Some(90 * day)),
            (&["36h"], false, Ok(36 * 3600), Some(90 * day)),
            (&["24h"], false, Ok(day), Some(90 * day)),
            (&["23h"], false, Err("--retain 23h is under 24h"), None),
            (&["0h"], false, Err("--force"), None),
            (&["0h"], true, Ok(0), Some(90 * day)),
            (&["00d"], true, Ok(0), Some(90 * day)),
            (&["soon"], true, Err("--retain \"soon\""), None),
            (&["-1h"], true, Err("--retain \"-1h\""), None),
        ];
        for (flags, force, want, keep) in cases {
            let args = crate::cli::VacuumArgs {
                retain: flags.first().map(|s| s.to_string()),
                force,
                ..Default::default()
            };
            match (vacuum_plan(&args, &job), want) {
                (Ok((_, p)), Ok(secs)) => {
                    assert_eq!(p.retain.as_secs(), secs, "{flags:?}");
                    assert_eq!(p.keep_history.map(|d| d.as_secs()), keep, "{flags:?}");
                }
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{flags:?}: {e}"),
                (got, want) => panic!("{flags:?}: {got:?}, want {want:?}"),
            }
        }
        for (text, want) in [("all", None), ("ALL", None), ("30d", Some(30 * day))] {
            let args = crate::cli::VacuumArgs {
                keep_history: Some(text.into()),
                ..Default::default()
            };
            let (_, p) = vacuum_plan(&args, &job).unwrap();
            assert_eq!(p.keep_history.map(|d| d.as_secs()), want, "{text}");
        }
        for bad in ["0d", "never", "90"] {
            let args = crate::cli::VacuumArgs {
                keep_history: Some(bad.into()),
                ..Default::default()
            };
            assert!(vacuum_plan(&args, &job).is_err(), "{bad}");
        }
        let none = crate::cli::VacuumArgs::default();
        let e = vacuum_plan(&none, &JobFile::default()).unwrap_err();
        assert!(e.to_string().contains("--out"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let e = JobFile::parse(
            Path::new("jobs/x.toml"),
            "sdkappid = 1\nrgion = \"china\"\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("jobs/x.toml:") && msg.contains("rgion"),
            "{msg}"
        );
    }

    #[test]
    fn an_out_url_in_a_job_file_is_kept_as_a_url() {
        // A URL in a job file is not resolved against the job file's folder.
        let job = JobFile::parse(Path::new("/etc/msgext/j.toml"), "out = \"s3://b/p\"\n").unwrap();
        assert_eq!(job.out, Some(PathBuf::from("s3://b/p")));
        // and the plan writes to the bucket, its state in a folder of its own.
        let job = JobFile::parse(
            Path::new("/etc/msgext/j.toml"),
            "input = \"in.csv\"\nout = \"s3://b/p\"\nstate_dir = \"/var/lib/msgext\"\nsdkappid = 1\nregion = \"china\"\n",
        )
        .unwrap();
        let p = plan(&ExportArgs::default(), &job, &env()).unwrap();
        assert_eq!(p.out, Out::Url("s3://b/p".into()));
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/msgext"));
    }

    #[test]
    fn a_secret_in_a_job_file_is_reported_by_key_and_line_never_by_value() {
        let secret = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
        let table = [
            (
                format!("sdkappid = 1\nsecret_key = \"{secret}\"\n"),
                "line 2, key secret_key",
            ),
            (format!("sdkappid = \"{secret}\"\n"), "line 1, key sdkappid"),
            (
                format!("region = \"china\"\nusersig = '{secret}'\n"),
                "line 2, key usersig",
            ),
            (
                format!("identifier = \"{secret}\"\nrate = \"{secret}\"\n"),
                "line 1, key identifier",
            ),
        ];
        for (text, want) in table {
            let e = JobFile::parse(Path::new("j.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(!e.contains(&secret[..16]), "the secret leaked: {e}");
            assert!(e.starts_with("j.toml: ") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn no_value_of_a_job_file_is_quoted_in_an_error() {
        // Secrets that are not 64 hex digits, typed where an enum or a number goes.
        let secret = "Zq9-not-hex-but-secret";
        let table = [
            (
                format!("region = \"{secret}\"\n"),
                "line 1, key region: not one of china, singapore",
            ),
            (
                format!("sdkappid = 1\nformat = '{secret}'\n"),
                "line 2, key format: not one of parquet, csv",
            ),
            (
                format!("rate = \"{secret}\"\n"),
                "line 1, key rate: invalid type: string …, expected u32",
            ),
        ];
        for (text, want) in table {
            let e = JobFile::parse(Path::new("j.toml"), &text)
                .unwrap_err()
                .to_string();
            assert!(!e.contains(&secret[..10]), "the value leaked: {e}");
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn the_secret_key_in_any_key_of_a_job_file_is_refused_before_any_call() {
        let secret = "Zq9-the-apps-secret-key";
        let text = format!("sdkappid = 1\nidentifier = \"{secret}\"\n");
        // It parses (an identifier is any text) ...
        JobFile::parse(Path::new("j.toml"), &text).unwrap();
        // ... but holds the key the environment gives.
        let e = refuse_secret_values(Path::new("j.toml"), &text, &["x", secret])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("j.toml: line 2, key identifier: holds a secret key"),
            "{e}"
        );
        assert!(!e.contains(&secret[..10]), "{e}");
        // Short secrets (tests' "k") match nothing by accident; other values pass.
        refuse_secret_values(Path::new("j.toml"), &text, &["k"]).unwrap();
        // 64 hex digits anywhere in a value look like a key.
        let hex = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
        let e = JobFile::parse(
            Path::new("j.toml"),
            &format!("endpoint = \"http://h/{hex}\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 1, key endpoint: holds a secret key"),
            "{e}"
        );
        // On a line of its own inside a multi-line string: told by the key above it.
        let e = JobFile::parse(
            Path::new("j.toml"),
            &format!("sdkappid = 1\nidentifier = \"\"\"\n{hex}\n\"\"\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 3, key identifier: holds a secret key"),
            "{e}"
        );
        assert!(!e.contains(&hex[..16]), "{e}");
        // A key named after the secret: refused, and the key not quoted either.
        for text in [format!("{secret} = 1\n"), format!("{hex} = 1\n")] {
            let e = refuse_secret_values(Path::new("j.toml"), &text, &[secret])
                .unwrap_err()
                .to_string();
            assert!(e.contains("line 1: holds a secret key"), "{e}");
            assert!(!e.contains(&secret[..10]) && !e.contains(&hex[..16]), "{e}");
        }
        let e = JobFile::parse(Path::new("j.toml"), &format!("{hex} = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains(&hex[..16]), "{e}");
        // 63 are not a key; a comment is not a value.
        JobFile::parse(
            Path::new("j.toml"),
            &format!("identifier = \"{}\"\n# x = {hex}\n", &hex[1..]),
        )
        .unwrap();
    }

    #[test]
    fn flags_override_the_job_file_and_paths_follow_the_job_file() {
        let job = JobFile::parse(
            Path::new("/etc/msgext/nightly.toml"),
            "input = \"in.csv\"\nout = \"/lake\"\nsdkappid = 1\nregion = \"singapore\"\nrate = 50\nformat = \"csv\"\nstore_timeout = 90\n",
        )
        .unwrap();
        assert_eq!(job.input, Some(PathBuf::from("/etc/msgext/in.csv")));
        let args = ExportArgs {
            api: ApiArgs {
                rate: Some(10),
                endpoint: Some("http://127.0.0.1:1".into()),
                ..ApiArgs::default()
            },
            ..ExportArgs::default()
        };
        let p = plan(&args, &job, &env()).unwrap();
        assert_eq!(p.api.rate, 10);
        assert_eq!(p.api.base_url, "http://127.0.0.1:1");
        assert_eq!(p.format, Format::Csv);
        assert_eq!(p.out, Out::Dir(PathBuf::from("/lake")));
        assert_eq!(p.state_dir, PathBuf::from("/lake/_runs"));
        assert_eq!(p.api.identifier, "administrator");
        assert_eq!(p.write.store_timeout, std::time::Duration::from_secs(90));
        let p = plan(&ExportArgs::default(), &job, &env()).unwrap();
        assert_eq!(p.api.base_url, "https://adminapisgp.im.qcloud.com");
        assert_eq!(
            (p.api.rate, p.concurrency, p.api.max_attempts),
            (50, None, 8)
        );
    }

    #[test]
    fn parquet_tables_are_delta_unless_asked_and_csv_is_always_plain() {
        use TableFormat::{Delta, Plain};
        let (p, c) = (Some(Format::Parquet), Some(Format::Csv));
        // (--format, --table-format, the job's table_format, the outcome)
        type Row = (
            Option<Format>,
            Option<TableFormat>,
            Option<TableFormat>,
            Result<TableFormat, &'static str>,
        );
        let table: [Row; 7] = [
            (None, None, None, Ok(Delta)),
            (p, None, None, Ok(Delta)),
            (p, Some(Plain), None, Ok(Plain)),
            (p, None, Some(Plain), Ok(Plain)),
            (p, Some(Delta), Some(Plain), Ok(Delta)),
            (c, None, None, Ok(Plain)),
            (
                c,
                Some(Delta),
                None,
                Err("--table-format delta needs --format parquet"),
            ),
        ];
        for (format, flag, key, want) in table {
            let args = ExportArgs {
                format,
                table_format: flag,
                ..ExportArgs::default()
            };
            let job = JobFile {
                table_format: key,
                ..JobFile::default()
            };
            let got = table_format(&args, &job).map_err(|e| e.to_string());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("{format:?} {flag:?} {key:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn what_is_missing_or_wrong_is_named() {
        let base = ExportArgs {
            api: ApiArgs {
                sdkappid: Some(1),
                region: Some(Region::China),
                ..ApiArgs::default()
            },
            input: Some("in.csv".into()),
            out: Some("out".into()),
            ..ExportArgs::default()
        };
        let cases: Vec<(ExportArgs, Env, &str)> = vec![
            (
                ExportArgs {
                    input: None,
                    ..base.clone()
                },
                env(),
                "--input",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        sdkappid: None,
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "--sdkappid",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        region: None,
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "--region",
            ),
            (
                ExportArgs {
                    concurrency: Some(0),
                    ..base.clone()
                },
                env(),
                "--concurrency",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        max_attempts: Some(0),
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "--max-attempts",
            ),
            (
                ExportArgs {
                    run_id: Some("../x".into()),
                    ..base.clone()
                },
                env(),
                "--run-id",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        region: None,
                        endpoint: Some("ftp://x".into()),
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "http",
            ),
            (
                ExportArgs {
                    run_id: Some("r".repeat(MAX_RUN_ID_LEN + 1)),
                    ..base.clone()
                },
                env(),
                "--run-id",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        give_up_after: Some(0.5 / 60.0),
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "--give-up-after",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        give_up_after: Some(f64::NAN),
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "--give-up-after",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        max_attempts: Some(1000),
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "--max-attempts",
            ),
            (
                ExportArgs {
                    api: ApiArgs {
                        rate: Some(1_000_000),
                        ..base.api.clone()
                    },
                    ..base.clone()
                },
                env(),
                "--rate",
            ),
            (
                ExportArgs {
                    max_file_mb: Some(-1.0),
                    ..base.clone()
                },
                env(),
                "--max-file-mb",
            ),
            (
                ExportArgs {
                    max_file_mb: Some(2e6),
                    ..base.clone()
                },
                env(),
                "at most 1048576",
            ),
            (
                ExportArgs {
                    run_id: Some(".x".into()),
                    ..base.clone()
                },
                env(),
                "not starting with '.'",
            ),
            (
                ExportArgs {
                    store_timeout: Some(0.5),
                    ..base.clone()
                },
                env(),
                "--store-timeout",
            ),
            (
                ExportArgs {
                    store_timeout: Some(f64::NAN),
                    ..base.clone()
                },
                env(),
                "--store-timeout",
            ),
            (base.clone(), Env::default(), "MSGEXT_SECRET_KEY"),
        ];
        for (args, env, want) in cases {
            let e = plan(&args, &JobFile::default(), &env)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e:?} should name {want}");
        }
        let usersig_only = Env {
            usersig: Some("sig".into()),
            ..Env::default()
        };
        assert_eq!(
            plan(&base, &JobFile::default(), &usersig_only)
                .unwrap()
                .api
                .secret,
            Secret::UserSig("sig".into())
        );
    }
}
