//! The command line (DESIGN §1) as clap derive structs. Parsing only: no files
//! or sockets are opened here.

use crate::api::Region;
use crate::write::{Format, TableFormat};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "msgext",
    version,
    about = "Export Tencent Cloud Chat message extensions (get_key_values, group_get_key_values) into a Parquet/CSV data-lake folder",
    after_help = "Exit codes: 0 every valid message exported or confirmed not found (invalid input rows are \
                  counted, listed in errors.csv and warned about; with --strict-input they give 3) · 3 finished, \
                  but some messages failed (see errors.csv) · 1 the run failed (auth, region, plan, I/O, an \
                  input that changed while it was read, damaged current tables) · 2 usage or config error (a \
                  mistyped --out, a state folder of another lake, a table feature msgext does not handle) · 130 \
                  interrupted."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Export every key-value pair of every message listed in a CSV.
    Export(ExportArgs),
    /// Build an input list from the app's history: every group's messages (--groups) or the
    /// one-to-one messages of listed accounts (--accounts), within a time window.
    Discover(DiscoverArgs),
    /// Check an input CSV without touching the network: counts, duplicates, bad lines.
    Validate(ValidateArgs),
    /// List the runs in a lake (id, status, start, rows, where the state lives), or drop an
    /// unfinished one.
    Runs(RunsArgs),
    /// Receive the app's extension callbacks (its webhook URL), keep them in a journal and
    /// commit them to the lake's events tables, for `export --changed`.
    Listen(ListenArgs),
    /// Keep a lake bounded: delete the data files no table version within --retain needs, clean
    /// each Delta log down to a checkpoint, and with --keep-history drop old runs.
    Vacuum(VacuumArgs),
    /// Check a lake for audits, read-only: logs, files, manifests (sha256), runs, current tables;
    /// with --sample, known messages against the API now.
    Verify(VerifyArgs),
    /// Serve the simulated API (the extension calls and the history APIs discover walks) and
    /// print its URL.
    Mock(MockArgs),
    /// Run a real export of sample-input/ against an embedded simulator; no account needed.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Default, Args)]
#[command(
    after_help = "Every flag but --run-id can also be given in a job file (--job), as a key named like \
                         the flag in snake_case: --max-attempts N is max_attempts = N. Flags override the job \
                         file. A run id names one run, and a job file is run again and again, so it is a flag \
                         only. Secrets never go in job files."
)]
pub(crate) struct ExportArgs {
    /// A job file (TOML) holding these settings; flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub(crate) job: Option<PathBuf>,
    /// Required: CSV of messages, From_Account, To_Account, MsgKey (one-to-one) or GroupId, MsgSeq (group).
    #[arg(long, value_name = "FILE.csv")]
    pub(crate) input: Option<PathBuf>,
    /// Required: the data lake to write into: a folder (a path or file:///path), or an object
    /// store: s3://BUCKET/prefix (credentials and endpoint from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP),
    /// gs://BUCKET/prefix (GOOGLE_APPLICATION_CREDENTIALS), az://CONTAINER/prefix
    /// (AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY).
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) out: Option<PathBuf>,
    /// Where the run's control files live (lock, run.json, write-ahead log, ledger, and for an
    /// object store the files waiting for upload), one folder per run [default: OUT/_runs for a
    /// folder; for a URL, $XDG_STATE_HOME or ~/.local/state, then msgext/<the URL>-<hash>]; the
    /// reports always go to OUT/_runs/<run id>/.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// The files' format [default: parquet].
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
    /// How Parquet tables are laid out: Delta tables (a `_delta_log` commits each run) or plain
    /// folders for readers without Delta [default: delta for Parquet; CSV is always plain].
    #[arg(long, value_enum)]
    pub(crate) table_format: Option<TableFormat>,
    /// Messages fetched at once [default: follows rate × latency, up to 512; 64 with --rate 0].
    #[arg(long, value_name = "N")]
    pub(crate) concurrency: Option<usize>,
    /// Names this run's files and its _runs/ folder [default: the newest unfinished run of the same
    /// input and settings (it is resumed), else r<start time, UTC, ms>-<random>].
    #[arg(long, value_name = "ID")]
    pub(crate) run_id: Option<String>,
    /// Print nothing but errors, and one line when the run does not complete.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Invalid input rows make the run partial (exit 3), as for an audit; without it they are
    /// counted, listed in errors.csv and warned about, and the run can still exit 0.
    #[arg(long)]
    pub(crate) strict_input: bool,
    /// Start a new part file past this size [default: 128].
    #[arg(long, value_name = "MB")]
    pub(crate) max_file_mb: Option<f64>,
    /// With an object-store --out: fail the run when one request to the store, its retries
    /// included, has not succeeded after this many seconds; each attempt and connection waits at
    /// most this long too, unless AWS_TIMEOUT / AWS_CONNECT_TIMEOUT (GOOGLE_…, AZURE_…) say
    /// otherwise [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub(crate) store_timeout: Option<f64>,
    /// Read every message in full, not only what changed since the last run (the current tables
    /// are rebuilt from what the API holds now); the job key full_every (default 7d) does so for
    /// a message whose last full read is older.
    #[arg(long)]
    pub(crate) full: bool,
    /// Make the list from the lake instead of --input: the messages named by the extension
    /// callbacks `msgext listen` committed since the last --changed run, plus the sweep's share
    /// of the known messages (--input adds its rows). Both kinds, one run each.
    #[arg(long)]
    pub(crate) changed: bool,
    /// With --changed: every known message is read at least once every K runs, about 1/K of
    /// them a run (0: no sweep, only what the callbacks name) [default: 7].
    #[arg(long, value_name = "K")]
    pub(crate) sweep_runs: Option<u32>,
    /// With --changed: only this kind of message [default: both].
    #[arg(long, value_enum)]
    pub(crate) kind: Option<KindArg>,
}

/// A kind of message on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum KindArg {
    OneToOne,
    Group,
}

/// Where the API is and how it is called: the same for every command that calls it.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ApiArgs {
    /// Required unless --endpoint: the data center of the SDKAppID (china, singapore, seoul, tokyo,
    /// frankfurt, mumbai, silicon-valley, jakarta).
    #[arg(long, value_parser = parse_region, conflicts_with = "endpoint")]
    pub(crate) region: Option<Region>,
    /// A base URL instead of a region (e.g. a simulator: http://127.0.0.1:PORT). Redirects are
    /// not followed (the UserSig is in the URL): give the final URL.
    #[arg(long, value_name = "URL")]
    pub(crate) endpoint: Option<String>,
    /// Required: the app's SDKAppID.
    #[arg(long, value_name = "N")]
    pub(crate) sdkappid: Option<u64>,
    /// An App admin account [default: administrator].
    #[arg(long, value_name = "ADMIN")]
    pub(crate) identifier: Option<String>,
    /// Calls per second for the whole run; 0 turns the limit off [default: 200].
    #[arg(long, value_name = "REQ_PER_S")]
    pub(crate) rate: Option<u32>,
    /// Attempts per call before a message is given up [default: 8].
    #[arg(long, value_name = "N")]
    pub(crate) max_attempts: Option<u32>,
    /// A file holding the secret key (else env MSGEXT_SECRET_KEY, or a ready MSGEXT_USERSIG).
    #[arg(long, value_name = "PATH")]
    pub(crate) secret_key_file: Option<PathBuf>,
    /// Stop cleanly when no call has succeeded for this many minutes [default: 10].
    #[arg(long, value_name = "MINUTES")]
    pub(crate) give_up_after: Option<f64>,
}

#[derive(Debug, Clone, Default, Args)]
#[command(
    group(clap::ArgGroup::new("source").args(["groups", "accounts"])),
    after_help = "The history APIs cover the app's retention window (7 days by default) and a \
                  conversation list holds an account's most recent 100 conversations by default; no \
                  list says which messages carry extensions, so the export calls each listed message \
                  once. In a job file the settings of this command sit in a [discover] table (out \
                  defaults to the job's input); the connection keys are the export's. Exit codes: 0 \
                  the list is whole (groups dismissed and accounts unknown are told) · 3 written, but \
                  some groups, accounts or conversations failed (told) · 1 the run failed, nothing \
                  written · 2 usage · 130 interrupted, nothing written."
)]
pub(crate) struct DiscoverArgs {
    /// A job file (TOML): the export's connection keys and a [discover] table.
    #[arg(long, value_name = "FILE")]
    pub(crate) job: Option<PathBuf>,
    /// List the messages of every group of the app (get_appid_group_list, group_msg_get_simple).
    #[arg(long)]
    pub(crate) groups: bool,
    /// Only groups of this type (Private/Work, Public, ChatRoom/Meeting, Community) [default:
    /// all four; AVChatRoom groups keep no history].
    #[arg(long, value_name = "TYPE")]
    pub(crate) group_type: Option<String>,
    /// List the one-to-one messages of the accounts of this CSV (a UserID column):
    /// recentcontact/get_list, then admin_getroammsg for each conversation.
    #[arg(long, value_name = "FILE.csv")]
    pub(crate) accounts: Option<PathBuf>,
    /// Messages sent since: 24h, 3d, 90m, or an RFC 3339 time [default: 7d, the default retention].
    #[arg(long, value_name = "WHEN")]
    pub(crate) since: Option<String>,
    /// Where the list goes (a valid --input for export), written whole or not at all; - for
    /// stdout [default in a job file: its input].
    #[arg(long, value_name = "FILE.csv")]
    pub(crate) out: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// Print nothing but errors and what was skipped.
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ValidateArgs {
    /// The CSV of messages to check (either kind); nothing is fetched.
    #[arg(long, value_name = "FILE.csv")]
    pub(crate) input: PathBuf,
}

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Statuses: complete and partial runs have _SUCCESS; running: an export holds its \
                  state folder now; unfinished: interrupted or killed, resumed by the same export \
                  command; failed: its last attempt failed. A plain SELECT over the folder counts \
                  the rows of every run: drop the unfinished ones you will not resume."
)]
pub(crate) struct RunsArgs {
    /// Required: the lake, as given to `msgext export --out` (a folder or s3://, gs://, az://).
    #[arg(long, value_name = "DIR|URL", global = true)]
    pub(crate) out: Option<PathBuf>,
    /// The state folder the exports of a bucket were given (--state-dir), for files waiting
    /// for upload [default: as msgext export].
    #[arg(long, value_name = "DIR", global = true)]
    pub(crate) state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) action: Option<RunsAction>,
}

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum RunsAction {
    /// Remove an unfinished run's files from the lake, and its state on this machine; refused
    /// for a finished run or one an export holds.
    Drop {
        /// The run id (see `msgext runs --out LAKE`).
        run: String,
        /// Drop a run whose state folder is on another machine (that machine and its export
        /// are gone).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Default, Args)]
#[command(
    after_help = "Every request is answered: an extension callback with OK once it is in the \
                  journal on disk (fsynced), any other callback with OK unstored, a forged, unsigned, \
                  stale or other app's one with 401/403 and nothing stored, a body that is no callback \
                  with 400, one over 1 MiB with 413, and 503 when the journal cannot be written. The \
                  journal is committed to extension_events / group_extension_events every \
                  --commit-every and on SIGTERM (then exit 0); events wait in it while the lake is \
                  unreachable. In a job file these settings sit in a [listen] table (out, sdkappid \
                  are the export's keys). Exit codes: 0 stopped by SIGTERM or Ctrl-C, everything \
                  committed or told · 1 the journal or the lake failed for good · 2 usage (no token, \
                  a state folder of another lake or app, an events table of another schema, the \
                  address taken)."
)]
pub(crate) struct ListenArgs {
    /// A job file (TOML): `out`, `sdkappid` and a [listen] table.
    #[arg(long, value_name = "FILE")]
    pub(crate) job: Option<PathBuf>,
    /// Required: the lake the events tables are committed to (as for export --out).
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) out: Option<PathBuf>,
    /// Required: the app whose callbacks are accepted (others get 403).
    #[arg(long, value_name = "N")]
    pub(crate) sdkappid: Option<u64>,
    /// Address and port to serve on; port 0 picks a free one (printed on stdout)
    /// [default: 127.0.0.1:8080, behind a TLS-terminating proxy].
    #[arg(long, value_name = "ADDR:PORT")]
    pub(crate) bind: Option<std::net::SocketAddr>,
    /// The listener's own folder (its id, lock and journal; one per listener, on a local disk)
    /// [default: OUT/_listen for a folder; for a URL, under $XDG_STATE_HOME or ~/.local/state].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// How often the journal is committed to the lake: 30s, 10m, 1h [default: 10s].
    #[arg(long, value_name = "EVERY")]
    pub(crate) commit_every: Option<String>,
    /// A file holding the console's webhook authentication token [else env
    /// MSGEXT_CALLBACK_TOKEN].
    #[arg(long, value_name = "PATH")]
    pub(crate) token_file: Option<PathBuf>,
    /// The app signs nothing (no token set in the console): accept unsigned callbacks of the
    /// app. Anyone who finds the URL can then add hints (they only cause reads).
    #[arg(long)]
    pub(crate) unsigned: bool,
    /// Print nothing but errors and warnings (no status lines).
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone, Default, Args)]
#[command(
    after_help = "Safe beside running exports and listeners: they only add files younger than \
                  the retention. Files of a run without _SUCCESS are kept for its resume (msgext \
                  runs drop removes them). A JSON summary line goes to stdout. In a job file these \
                  settings sit in a [vacuum] table (retain, keep_history, quiet). Exit codes: 0 done \
                  (or a dry run) · 1 a table's log could not be read or the lake refused a delete \
                  (that table is told and left; the same command finishes the work) · 2 usage (a \
                  retention under 24h without --force, a folder that is no lake, a table of another \
                  schema: nothing deleted)."
)]
pub(crate) struct VacuumArgs {
    /// A job file (TOML): `out`, `state_dir` and a [vacuum] table.
    #[arg(long, value_name = "FILE")]
    pub(crate) job: Option<PathBuf>,
    /// Required: the lake (as given to msgext export --out).
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) out: Option<PathBuf>,
    /// Keep every file a table version of this last span needs (readers on an older version,
    /// exports still uploading): 36h, 7d [default: 7d; under 24h only with --force].
    #[arg(long, value_name = "SPAN")]
    pub(crate) retain: Option<String>,
    /// Drop the runs of days older than this from the history and change tables (90d), or
    /// keep them all [default: all].
    #[arg(long, value_name = "SPAN|all")]
    pub(crate) keep_history: Option<String>,
    /// Print what would be deleted (files, bytes, log entries, per table); delete nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Allow a --retain under 24h (no export or listener may be running on the lake).
    #[arg(long)]
    pub(crate) force: bool,
    /// The state folder the exports of a bucket were given [default: as msgext export].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Print nothing but errors, warnings and the summary line.
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone, Default, Args)]
#[command(
    after_help = "Checks, without writing to the lake: every msgext table's log reads at its latest \
                  version and every file it references is there with its size; every finished run's \
                  manifest matches its files (sha256) and the run is in each of its tables once with \
                  the rows its summary counts; the current tables hold one row per (message, key) and \
                  per message, with kv_count matching. --sample re-reads known messages of --sdkappid \
                  in full from the API (as export: rate, retries, UserSig) and compares them with \
                  current_key_values; those that differ are written to DRIFT_DIR/drift-<kind>.csv, a \
                  valid --input. A report on stdout, then a JSON summary line. Exit codes: 0 sound · \
                  3 the lake is whole, some messages differ from the API (or could not be read) · 1 \
                  damage (a missing or changed file, an unreadable log, a count that does not add up) \
                  · 2 usage, a folder that is no lake, a table of another schema."
)]
pub(crate) struct VerifyArgs {
    /// A job file (TOML): `out`, the connection keys.
    #[arg(long, value_name = "FILE")]
    pub(crate) job: Option<PathBuf>,
    /// Required: the lake (as given to msgext export --out).
    #[arg(long, value_name = "DIR|URL")]
    pub(crate) out: Option<PathBuf>,
    /// Read this many known messages again (N, P% or all) and compare them with the current tables.
    #[arg(long, value_name = "N|P%|all")]
    pub(crate) sample: Option<String>,
    /// Where the drift lists go [default: the current folder].
    #[arg(long, value_name = "DIR")]
    pub(crate) drift_dir: Option<PathBuf>,
    /// The state folder the exports of a bucket were given [default: as msgext export].
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) api: ApiArgs,
    /// Print nothing but the report and errors.
    #[arg(long)]
    pub(crate) quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct MockArgs {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub(crate) port: u16,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) bind: std::net::IpAddr,
    /// A JSON store of messages (and a "history" of groups, accounts and one-to-one messages for
    /// discover); default: data matching sample-input/ and a sample history.
    #[arg(long, value_name = "FILE")]
    pub(crate) store: Option<PathBuf>,
    /// Serve the store as it stands after its first N rounds of changes (its "rounds": lists of
    /// {kind, identity, op: set|delete|clear|vanish}), as the service would some nights later.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "store")]
    pub(crate) round: usize,
    /// Then change this share of the messages (0 to 1; new values and keys, deletes, clears,
    /// growth, vanishing; seeded by --seed): a night's changes, for trying incremental reads.
    #[arg(long, value_name = "P", value_parser = parse_share)]
    pub(crate) change: Option<f64>,
    /// How the service shows a deleted key: tombstone (a pair with an empty value), hidden
    /// (gone, LatestSeq moves) or highest-held (gone, LatestSeq is the highest Seq held)
    /// [default: the store's, else tombstone].
    #[arg(long, value_enum)]
    pub(crate) deletes: Option<crate::mock::store::Deletes>,
    /// The SDKAppID the simulator answers for (its secret: env MSGEXT_SECRET_KEY, else the demo key).
    #[arg(long, default_value_t = crate::mock::DEMO_SDKAPPID)]
    pub(crate) sdkappid: u64,
    /// App admin identifiers accepted (repeatable) [default: administrator].
    #[arg(long = "admin", value_name = "ID")]
    pub(crate) admins: Vec<String>,
    /// Share of calls answered ErrorCode 10002.
    #[arg(long = "fault-10002", default_value_t = 0.0, value_name = "P", value_parser = parse_share)]
    pub(crate) fault_10002: f64,
    /// Share of calls answered HTTP 502 (0 to 1, like every share).
    #[arg(long = "fault-5xx", default_value_t = 0.0, value_name = "P", value_parser = parse_share)]
    pub(crate) fault_5xx: f64,
    /// Share of calls whose connection is closed without an answer.
    #[arg(long = "fault-drop", default_value_t = 0.0, value_name = "P", value_parser = parse_share)]
    pub(crate) fault_drop: f64,
    /// Share of calls answered --slow-ms late.
    #[arg(long = "fault-slow", default_value_t = 0.0, value_name = "P", value_parser = parse_share)]
    pub(crate) fault_slow: f64,
    /// How much later the --fault-slow answers come.
    #[arg(long, default_value_t = 2500, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub(crate) slow_ms: u64,
    /// Latency added to every call.
    #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub(crate) latency_ms: u64,
    /// Calls per second above which the quota error is answered.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) quota: Option<u32>,
    /// Answer calls over --quota with HTTP 429 (as a gateway does) instead of error 60007.
    #[arg(long, requires = "quota")]
    pub(crate) quota_429: bool,
    /// Seed of the random faults (and of the default data).
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Serve N synthetic messages instead of a store (for load tests).
    #[arg(long, value_name = "N", conflicts_with = "store")]
    pub(crate) synthetic: Option<usize>,
    /// Pairs per synthetic message (the API holds at most 300 a message).
    #[arg(long, default_value_t = 200, value_name = "N", value_parser = parse_pairs)]
    pub(crate) pairs: usize,
    /// Post the extension callbacks of the changes applied (the last --round and --change) to
    /// this URL, as the service would after each change, before serving.
    #[arg(long, value_name = "URL")]
    pub(crate) callback_url: Option<String>,
    /// Sign the callbacks with this webhook token (RequestTime and Sign in the query).
    #[arg(long, value_name = "TOKEN", requires = "callback_url")]
    pub(crate) callback_token: Option<String>,
    /// Share of the callbacks never sent (the service does not retry them).
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_share, requires = "callback_url")]
    pub(crate) callback_loss: f64,
    /// Share of the callbacks sent twice.
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_share, requires = "callback_url")]
    pub(crate) callback_twice: f64,
    /// Write the list of the served messages as an input CSV here (those of
    /// the first message's kind: one file lists one kind).
    #[arg(long, value_name = "FILE")]
    pub(crate) write_input: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Where the demo writes its data-lake folder.
    #[arg(long, default_value = "demo-lake", value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// The files' format.
    #[arg(long, value_enum, default_value_t = Format::Parquet)]
    pub(crate) format: Format,
}

fn parse_region(s: &str) -> Result<Region, String> {
    s.parse()
}

fn parse_pairs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= 300 => Ok(n),
        _ => Err(format!("{s:?}: a message holds 0 to 300 pairs")),
    }
}

/// A share of calls: a number from 0 to 1.
fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a share of calls from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn region_and_endpoint_exclude_each_other() {
        let r = Cli::try_parse_from([
            "msgext",
            "export",
            "--region",
            "singapore",
            "--endpoint",
            "http://x",
        ]);
        assert!(r.is_err());
        let ok = Cli::try_parse_from(["msgext", "export", "--region", "silicon-valley"]).unwrap();
        let Command::Export(a) = ok.command else {
            panic!()
        };
        assert_eq!(a.api.region, Some(Region::SiliconValley));
    }

    #[test]
    fn every_flag_of_every_command_is_described() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                assert!(
                    arg.get_help().is_some() || arg.get_id() == "help",
                    "msgext {} --{} has no help text",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    /// The help promises that every flag of `export` is a job-file key named
    /// like it in snake_case: a key the job file does not know is refused
    /// as unknown, whatever its value.
    #[test]
    fn every_export_flag_is_a_job_file_key() {
        let cli = Cli::command();
        let export = cli.find_subcommand("export").unwrap();
        let mut n = 0;
        for arg in export.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            // A run id names one run; a job file is run again and again.
            if ["job", "help", "run-id"].contains(&long) {
                continue;
            }
            let key = long.replace('-', "_");
            let e =
                crate::job::JobFile::parse(std::path::Path::new("j.toml"), &format!("{key} = []"))
                    .unwrap_err()
                    .to_string();
            assert!(!e.contains("unknown field"), "--{long}: {e}");
            n += 1;
        }
        assert!(n >= 16, "{n} flags");
    }

    #[test]
    fn fault_rates_are_shares_of_calls() {
        let parse = |p: &str| Cli::try_parse_from(["msgext", "mock", "--fault-10002", p]);
        for ok in ["0", "0.05", "1"] {
            assert!(parse(ok).is_ok(), "{ok}");
        }
        for bad in ["-0.1", "1.5", "NaN", "x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
