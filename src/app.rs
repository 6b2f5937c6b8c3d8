//! The glue between the command line and the library: reads the job file, the
//! environment and the secret key file, runs the subcommand on a Tokio
//! runtime, handles Ctrl-C / SIGTERM, prints, and maps results to exit codes.

use crate::cli::{
    ApiArgs, Cli, Command, DemoArgs, DiscoverArgs, ExportArgs, ListenArgs, MockArgs, RunsAction,
    RunsArgs, VacuumArgs, ValidateArgs, VerifyArgs,
};
use crate::export::{self, Tuning, Ui};
use crate::fetch::{StopReason, StopSignal};
use crate::job::{self, Env, JobFile};
use crate::kind::Kind;
use crate::mock::{Faults, MockConfig, MockServer};
use crate::report::ProgressMode;
use clap::Parser;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Logs for operators on stderr, chosen with `RUST_LOG` (`info`,
/// `msgext=debug`, `msgext=debug,object_store=info`, …): checkpoints and
/// rate-limit cuts at info, retries, uploads and concurrency changes at
/// debug. Unset, only warnings show.
fn init_logging() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let warn_only = Targets::new()
        .with_default(tracing::Level::WARN)
        .with_target(
            crate::table::delta::QUIET_LOG,
            tracing_subscriber::filter::LevelFilter::OFF,
        );
    let (targets, bad) = match spec.trim() {
        "" => (warn_only, None),
        s => match s.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (warn_only, Some(e)),
        },
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(targets)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!("RUST_LOG={spec:?} is not understood ({e}); showing warnings only");
    }
}

pub fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    init_logging();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Export(_)) {
        // One thread carries the API's whole quota (200 calls/s) with CPU to
        // spare; a second only adds wake-ups between the two (measured with
        // `cargo bench --bench throughput -- quota`: 4.4 context switches a
        // call with two, 2.8 with one). Encoding and file I/O run on
        // blocking threads, a bucket's uploads are tasks beside the calls
        // (see the export module's doc).
        builder.worker_threads(1);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("msgext: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match cli.command {
        Command::Export(a) => rt.block_on(export_cmd(a)),
        Command::Discover(a) => rt.block_on(discover_cmd(a)),
        Command::Validate(a) => validate_cmd(&a),
        // Synchronous, but a bucket's requests run on the runtime.
        Command::Runs(a) => rt.block_on(async { runs_cmd(&a) }),
        Command::Listen(a) => rt.block_on(listen_cmd(a)),
        Command::Vacuum(a) => rt.block_on(async { vacuum_cmd(&a) }),
        Command::Verify(a) => rt.block_on(verify_cmd(a)),
        Command::Mock(a) => rt.block_on(mock_cmd(a)),
        Command::Demo(a) => rt.block_on(demo_cmd(a)),
    };
    rt.shutdown_background();
    ExitCode::from(code)
}

/// Keep the resident set flat over long runs. glibc raises its mmap
/// threshold as large buffers are freed, after which they come from arenas
/// that only grow, and it opens an arena per busy thread. A fixed 4 MiB
/// threshold, 16 MiB of freed heap kept and two arenas keep the peak at
/// 1.25M rows within 1.3x of the peak at 50k rows, and let the Parquet
/// writer's page buffers (up to about 1 MiB) come back from the heap instead
/// of being mapped and faulted in page by page (a tenth of the page faults;
/// figures in docs/performance.md, `cargo bench --bench throughput`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

/// A bar on a terminal, `off_terminal` elsewhere, nothing when quiet.
fn ui(quiet: bool, off_terminal: ProgressMode) -> Ui {
    let progress = match (quiet, std::io::stderr().is_terminal()) {
        (true, _) => ProgressMode::Off,
        (false, true) => ProgressMode::Bar,
        (false, false) => off_terminal,
    };
    Ui { progress }
}

fn fail(code: u8, msg: impl std::fmt::Display) -> u8 {
    eprintln!("msgext: error: {msg}");
    code
}

/// First Ctrl-C or SIGTERM: stop taking new messages and finish cleanly.
/// Second: exit at once with 130.
fn watch_signals(stop: StopSignal, quiet: bool) {
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for n in 0.. {
            #[cfg(unix)]
            {
                let term_recv = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term_recv => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            if n > 0 {
                eprintln!("msgext: interrupted again: exiting now");
                std::process::exit(130);
            }
            if !quiet {
                eprintln!(
                    "msgext: interrupted: finishing what is in flight (Ctrl-C again to exit at once)"
                );
            }
            stop.trigger(StopReason::Interrupted);
        }
    });
}

/// The job file (if one is named) and the environment's credentials, the
/// job file refused if it holds a secret. `Err` is the exit code, told.
fn job_and_env(job_path: Option<&std::path::Path>, api: &ApiArgs) -> Result<(JobFile, Env), u8> {
    let job_text = match job_path {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Err(e) => return Err(fail(2, format!("{}: {e}", path.display()))),
            Ok(text) => Some(text),
        },
    };
    let job = match (job_path, &job_text) {
        (Some(path), Some(text)) => JobFile::parse(path, text).map_err(|e| fail(2, e))?,
        _ => JobFile::default(),
    };
    let secret_key_file = match job::secret_key_file(api, &job) {
        None => None,
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(k) => Some(k),
            Err(e) => return Err(fail(2, format!("{}: {e}", p.display()))),
        },
    };
    let env = Env {
        secret_key: std::env::var("MSGEXT_SECRET_KEY")
            .ok()
            .filter(|s| !s.is_empty()),
        usersig: std::env::var("MSGEXT_USERSIG")
            .ok()
            .filter(|s| !s.is_empty()),
        secret_key_file,
        state_vars: Env::state_vars_from_process(),
    };
    if let (Some(path), Some(text)) = (job_path, &job_text) {
        let secrets: Vec<&str> = [&env.secret_key, &env.usersig, &env.secret_key_file]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        job::refuse_secret_values(path, text, &secrets).map_err(|e| fail(2, e))?;
    }
    Ok((job, env))
}

async fn discover_cmd(args: DiscoverArgs) -> u8 {
    let (job, env) = match job_and_env(args.job.as_deref(), &args.api) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let plan = match job::discover_plan(&args, &job, &env, chrono::Utc::now()) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let quiet = plan.quiet;
    let progress = ui(quiet, ProgressMode::JsonLines).progress;
    let stop = StopSignal::default();
    watch_signals(stop.clone(), quiet);
    let out = match &plan.out {
        crate::discover::ListOut::Stdout => "stdout".to_owned(),
        crate::discover::ListOut::File(p) => p.display().to_string(),
    };
    let tuning = Tuning::default();
    match crate::discover::run(plan, progress, tuning.retry, tuning.timeout, stop).await {
        Ok(found) => {
            for line in found.told() {
                eprintln!("msgext: {line}");
            }
            if !quiet {
                eprintln!("msgext: {}", found.one_line(&out));
            }
            if progress == ProgressMode::JsonLines {
                eprintln!("{}", found.json(&out));
            }
            if found.failed.is_empty() { 0 } else { 3 }
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

async fn export_cmd(args: ExportArgs) -> u8 {
    let (job, env) = match job_and_env(args.job.as_deref(), &args.api) {
        Ok(j) => j,
        Err(code) => return code,
    };
    if args.changed || job.changed.unwrap_or(false) {
        return changed_cmd(&args, &job, &env).await;
    }
    let plan = match job::plan(&args, &job, &env) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let quiet = plan.quiet;
    let ui = ui(quiet, ProgressMode::JsonLines);
    let stop = StopSignal::default();
    watch_signals(stop.clone(), quiet);
    match export::run(plan, ui, Tuning::default(), stop).await {
        Ok(summary) => {
            let resume = summary.resumable.then(|| {
                format!(
                    "to resume: {}",
                    resume_command(
                        std::env::args_os()
                            .map(|a| a.to_string_lossy().into_owned())
                            .collect(),
                        &summary.run_id,
                    )
                )
            });
            if !quiet {
                print!("{}", summary.human());
                if let Some(r) = &resume {
                    eprintln!("msgext: {r}");
                }
            } else if summary.status != crate::report::RunStatus::Complete {
                // Quiet, yet a run that did not complete says so in one line.
                let r = resume.map(|r| format!("; {r}")).unwrap_or_default();
                eprintln!("msgext: {}{r}", summary.one_line());
            }
            if summary.status == crate::report::RunStatus::Complete && summary.input.invalid > 0 {
                eprintln!(
                    "msgext: warning: {} input rows were invalid and not exported (listed in {}); \
                     --strict-input makes that exit 3",
                    summary.input.invalid, summary.errors_csv
                );
            }
            if summary.status == crate::report::RunStatus::Failed
                && !quiet
                && let Some(reason) = &summary.stop_reason
            {
                eprintln!("msgext: error: {reason}");
            }
            summary.status.exit_code()
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

/// `export --changed`: a run per kind with something to read, each
/// shown as any run is; the exit code of the worst.
async fn changed_cmd(args: &ExportArgs, job: &JobFile, env: &Env) -> u8 {
    let plan = match job::changed_plan(args, job, env) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let quiet = plan.base.quiet;
    let ui = ui(quiet, ProgressMode::JsonLines);
    let stop = StopSignal::default();
    watch_signals(stop.clone(), quiet);
    match export::changed::run(plan, ui, Tuning::default(), stop).await {
        Ok(summaries) => {
            let mut code = 0;
            for summary in &summaries {
                if !quiet {
                    print!("{}", summary.human());
                } else if summary.status != crate::report::RunStatus::Complete {
                    eprintln!("msgext: {}", summary.one_line());
                }
                let c = summary.status.exit_code();
                if severity(c) > severity(code) {
                    code = c;
                }
            }
            code
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

/// How bad an exit code is: 0 < 3 < 1 < 130.
fn severity(code: u8) -> u8 {
    match code {
        0 => 0,
        3 => 1,
        1 => 2,
        _ => 3,
    }
}

/// The command line that resumes run `run_id`: this one, with `--run-id`
/// added when it was not given, quoted for a POSIX shell.
pub(crate) fn resume_command(mut argv: Vec<String>, run_id: &str) -> String {
    let has_run_id = argv
        .iter()
        .any(|a| a == "--run-id" || a.starts_with("--run-id="));
    if !has_run_id {
        argv.push("--run-id".into());
        argv.push(run_id.into());
    }
    argv.iter()
        .map(|a| crate::report::shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn validate_cmd(args: &ValidateArgs) -> u8 {
    let reader = match crate::input::open_prescanned(&args.input, true) {
        Ok((r, _)) => r,
        Err(e) => return fail(2, e),
    };
    match crate::input::validate(reader) {
        Err(e) => fail(2, e),
        Ok(c) => {
            println!(
                "{}: {} rows, {} distinct messages, {} duplicates, {} invalid{}{}",
                args.input.display(),
                c.rows,
                c.distinct,
                c.duplicates,
                c.invalid.len(),
                if c.skipped > 0 {
                    format!(
                        ", {} rows of an earlier errors.csv skipped (invalid or not found)",
                        c.skipped
                    )
                } else {
                    String::new()
                },
                if c.trimmed > 0 {
                    format!(", {} with spaces trimmed", c.trimmed)
                } else {
                    String::new()
                }
            );
            for r in &c.invalid {
                println!("{}: line {}: {}", args.input.display(), r.line, r.reason);
            }
            if c.invalid.is_empty() { 0 } else { 3 }
        }
    }
}

/// `msgext runs [drop RUN] --out LAKE`.
fn runs_cmd(args: &RunsArgs) -> u8 {
    let Some(out) = &args.out else {
        return fail(2, "--out is required: the lake, as given to msgext export");
    };
    let out = match crate::write::Out::parse(&out.to_string_lossy()) {
        Ok(o) => o,
        Err(e) => return fail(2, e.to_string()),
    };
    let lake = match open_lake(&out, args.state_dir.clone()) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match &args.action {
        None => match crate::runs::list(&*lake) {
            Ok(runs) if runs.is_empty() => {
                println!("no runs in {}", out.display());
                0
            }
            Ok(runs) => {
                print!("{}", crate::runs::render(&runs));
                0
            }
            Err(e) => fail(e.exit_code(), e),
        },
        Some(RunsAction::Drop { run, force }) => {
            let host = crate::export::hostname();
            match crate::runs::drop_run(&*lake, run, *force, &host) {
                Ok(d) => {
                    println!(
                        "dropped run {run}: {} data files and {} reports removed from {}{}",
                        d.data_files,
                        d.report_files,
                        out.display(),
                        d.state
                            .map(|s| format!(", its state from {}", s.display()))
                            .unwrap_or_default()
                    );
                    0
                }
                Err(e) => fail(e.exit_code(), e),
            }
        }
    }
}

/// An existing lake, to read or clean: a mistyped folder is told (exit 2),
/// not taken for an empty lake.
fn open_lake(
    out: &crate::write::Out,
    state_dir: Option<std::path::PathBuf>,
) -> Result<std::sync::Arc<dyn crate::write::LakeStore>, u8> {
    if let crate::write::Out::Dir(d) = out
        && !d.is_dir()
    {
        return Err(fail(
            2,
            format!(
                "{}: no such folder; give the lake as msgext export wrote it (--out)",
                d.display()
            ),
        ));
    }
    let state_dir = match state_dir {
        Some(d) => d,
        None => out
            .default_state_dir(&|k| std::env::var(k).ok())
            .map_err(|e| fail(2, e.to_string()))?,
    };
    let timeout = crate::write::WriteOptions::default().store_timeout;
    out.open(&state_dir, timeout).map_err(|e| fail(1, e))
}

/// `msgext vacuum --out LAKE`: a line per table on stderr, the JSON
/// summary on stdout.
fn vacuum_cmd(args: &VacuumArgs) -> u8 {
    let job = match read_job(args.job.as_deref()) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let (out, plan) = match job::vacuum_plan(args, &job) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let state_dir = args.state_dir.clone().or_else(|| job.state_dir.clone());
    let lake = match open_lake(&out, state_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let quiet = plan.quiet;
    let tell = |line: String| {
        if !quiet {
            eprintln!("msgext: vacuum: {line}");
        }
    };
    match crate::vacuum::run(&*lake, &plan, &tell) {
        Ok(outcome) => {
            println!("{}", outcome.json(plan.dry_run));
            for (table, e) in &outcome.failed {
                eprintln!(
                    "msgext: error: {table}: {e}; the table was left as it stood, the same command finishes the work"
                );
            }
            u8::from(!outcome.failed.is_empty())
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

/// `msgext verify --out LAKE [--sample …]`: the report and a JSON line on
/// stdout, progress on stderr.
async fn verify_cmd(args: VerifyArgs) -> u8 {
    let (job, env) = match job_and_env(args.job.as_deref(), &args.api) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let (out, plan) = match job::verify_plan(&args, &job, &env) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    let state_dir = args.state_dir.clone().or_else(|| job.state_dir.clone());
    let lake = match open_lake(&out, state_dir) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let quiet = plan.quiet;
    let tell = move |line: String| {
        if !quiet {
            eprintln!("msgext: verify: {line}");
        }
    };
    let stop = StopSignal::default();
    watch_signals(stop.clone(), quiet);
    match crate::verify::run(lake, &plan, stop, &tell).await {
        Ok(verdict) => {
            print!("{}", verdict.report());
            println!("{}", verdict.json());
            verdict.exit_code()
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

/// The job file named by `--job`, if any (exit 2, told, when unreadable).
fn read_job(path: Option<&std::path::Path>) -> Result<JobFile, u8> {
    let Some(path) = path else {
        return Ok(JobFile::default());
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(2, format!("{}: {e}", path.display())))?;
    JobFile::parse(path, &text).map_err(|e| fail(2, e))
}

/// The webhook token: `--token-file` (or the job's), else MSGEXT_CALLBACK_TOKEN.
fn callback_token(args: &ListenArgs, job: &JobFile) -> Result<Option<String>, u8> {
    let file = args
        .token_file
        .clone()
        .or_else(|| job.listen.as_ref().and_then(|l| l.token_file.clone()));
    match file {
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
            Ok(_) => Err(fail(2, format!("{}: the token file is empty", p.display()))),
            Err(e) => Err(fail(2, format!("{}: {e}", p.display()))),
        },
        None => Ok(std::env::var("MSGEXT_CALLBACK_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())),
    }
}

/// `msgext listen`: serve until SIGTERM or Ctrl-C, then commit and exit 0.
async fn listen_cmd(args: ListenArgs) -> u8 {
    let job = match read_job(args.job.as_deref()) {
        Ok(j) => j,
        Err(code) => return code,
    };
    let token = match callback_token(&args, &job) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let plan = match job::listen_plan(&args, &job, token, &|k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => return fail(2, e),
    };
    if plan.token.is_none() {
        eprintln!(
            "msgext: warning: --unsigned: callbacks are checked for the app only; anyone who finds the URL can add hints"
        );
    }
    let stop = StopSignal::default();
    watch_signals(stop.clone(), plan.quiet);
    let (out, state, every) = (
        plan.out.display(),
        plan.state_dir.clone(),
        plan.commit_every,
    );
    let quiet = plan.quiet;
    let ready = move |addr: std::net::SocketAddr| {
        println!("http://{addr}");
        if !quiet {
            eprintln!(
                "msgext: listening on http://{addr} (journal in {}, committed to {out} every {}s)",
                state.display(),
                every.as_secs()
            );
        }
    };
    match crate::listen::run(plan, stop, ready).await {
        Ok(counters) => {
            if !quiet {
                eprintln!("{}", counters.json());
            }
            0
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

/// The simulator's store: a file (at its `--round`), synthetic, or the
/// demo's; then `--deletes` and `--change`. With it, the callbacks of the
/// changes applied last (the round served, and `--change`).
fn mock_store(
    args: &MockArgs,
) -> Result<
    (
        crate::mock::store::Store,
        Vec<crate::api::callback::ExtensionEvent>,
    ),
    crate::mock::store::StoreError,
> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let (mut store, mut events) = match (&args.store, args.synthetic) {
        (Some(path), _) => {
            let mut s = crate::mock::store::Store::load(path)?;
            let events = s.advance(args.round, now_ms)?;
            (s, events)
        }
        (None, Some(n)) => (
            crate::mock::store::Store::synthetic(n, args.pairs, 40),
            Vec::new(),
        ),
        (None, None) => (crate::demo::demo_store(), Vec::new()),
    };
    if let Some(d) = args.deletes {
        store.deletes = d;
    }
    if let Some(share) = args.change {
        let changes = store.random_changes(args.seed, share);
        events.extend(store.apply_with_events(&changes, now_ms));
    }
    Ok((store, events))
}

fn mock_faults(args: &MockArgs) -> Faults {
    Faults {
        p_10002: args.fault_10002,
        p_5xx: args.fault_5xx,
        p_drop: args.fault_drop,
        p_slow: args.fault_slow,
        slow_ms: args.slow_ms,
        latency_ms: args.latency_ms,
        quota: args.quota,
        quota_429: args.quota_429,
        proxy_page: None,
    }
}

async fn mock_cmd(args: MockArgs) -> u8 {
    let (store, events) = match mock_store(&args) {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let kind = store
        .messages
        .first()
        .map_or(Kind::OneToOne, |m| m.id.kind());
    if let Some(path) = &args.write_input
        && let Err(e) = std::fs::write(path, store.input_csv(kind))
    {
        return fail(1, format!("{}: {e}", path.display()));
    }
    let secret_key = std::env::var("MSGEXT_SECRET_KEY")
        .ok()
        .filter(|s| !s.is_empty());
    let using_demo_key = secret_key.is_none();
    let config = MockConfig {
        sdkappid: args.sdkappid,
        secret_key: secret_key.unwrap_or_else(|| crate::mock::DEMO_SECRET_KEY.to_owned()),
        admins: if args.admins.is_empty() {
            vec![job::DEFAULT_IDENTIFIER.to_owned()]
        } else {
            args.admins.clone()
        },
        faults: mock_faults(&args),
        seed: args.seed,
        page_size: crate::api::PAGE_SIZE,
        paging: Default::default(),
    };
    let n = store.messages.len();
    let server = match MockServer::start(store, config, (args.bind, args.port).into()).await {
        Ok(s) => s,
        Err(e) => {
            return fail(
                1,
                format!("cannot listen on {}:{}: {e}", args.bind, args.port),
            );
        }
    };
    println!("{}", server.url());
    eprintln!(
        "msgext mock: {n} messages, SDKAppID {}, secret key {}; Ctrl-C to stop",
        args.sdkappid,
        if using_demo_key {
            format!(
                "{:?} (the demo key; set MSGEXT_SECRET_KEY for another)",
                crate::mock::DEMO_SECRET_KEY
            )
        } else {
            "from MSGEXT_SECRET_KEY".to_owned()
        }
    );
    if let Some(url) = &args.callback_url {
        let delivery = crate::mock::callbacks::Delivery {
            url: url.clone(),
            token: args.callback_token.clone(),
            sdkappid: args.sdkappid,
            loss: args.callback_loss,
            twice: args.callback_twice,
            seed: args.seed,
        };
        let d = crate::mock::callbacks::deliver(&delivery, &events).await;
        eprintln!("msgext mock: callbacks to {url}: {}", d.one_line());
    }
    tokio::select! {
        _ = server.serve_forever() => 1,
        _ = tokio::signal::ctrl_c() => 0,
    }
}

async fn demo_cmd(args: DemoArgs) -> u8 {
    let stop = StopSignal::default();
    watch_signals(stop.clone(), false);
    let ui = ui(false, ProgressMode::Off);
    eprintln!(
        "msgext demo: starting the simulator and exporting sample-input/messages.csv, \
         sample-input/polls.csv and sample-input/group-messages.csv into {}/",
        args.out.display()
    );
    match crate::demo::run(&args, ui, stop).await {
        Ok((summaries, url)) => {
            println!("(simulator at {url}, answering 5% of calls with error 10002)");
            for s in &summaries {
                print!("{}", s.human());
            }
            if args.format == crate::write::Format::Parquet {
                match crate::demo::most_voted_poll(&args.out) {
                    Ok(Some(p)) => println!(
                        "The poll with the most votes now (from current_key_values): {:?} ({} votes: {})",
                        p.question,
                        p.total(),
                        p.votes
                            .iter()
                            .map(|(o, n)| format!("{o} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Ok(None) => {}
                    Err(e) => eprintln!("msgext demo: cannot read the current tables: {e}"),
                }
            }
            print!("{}", crate::demo::duckdb_hint(&args.out, args.format));
            summaries
                .iter()
                .map(|s| s.status.exit_code())
                .find(|&c| c != 0)
                .unwrap_or(0)
        }
        Err(e) => fail(e.exit_code(), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resume_command_is_this_one_with_the_run_id() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table = [
            (
                argv(&["msgext", "export", "--input", "in.csv"]),
                "msgext export --input in.csv --run-id r1",
            ),
            (
                argv(&["msgext", "export", "--run-id", "nightly"]),
                "msgext export --run-id nightly",
            ),
            (
                argv(&["msgext", "export", "--run-id=nightly"]),
                "msgext export --run-id=nightly",
            ),
            (
                argv(&["msgext", "export", "--input", "my list's.csv"]),
                "msgext export --input 'my list'\\''s.csv' --run-id r1",
            ),
        ];
        for (args, want) in table {
            assert_eq!(resume_command(args, "r1"), want);
        }
    }
}
