//! `msgext discover`: the message list, built from the app's history APIs
//! (the API notes, "Where message lists come from"), written as a valid
//! `--input` for `msgext export`.
//!
//! Groups: the app's groups of the types that carry extensions
//! (`get_appid_group_list`, at its own 1 call a second), then each group's
//! history backwards (`group_msg_get_simple`). Accounts: each listed
//! account's conversations (`recentcontact/get_list`), then each one-to-one
//! conversation's history in the window (`admin_getroammsg`), a pair of two
//! listed accounts read once. Every call goes through the export's `Calls`
//! (limiter, retries, probe gate, stop rules). Walks run concurrently and
//! come back in order (`buffered`), so the list is the same run after run
//! for the same history: sources in the order listed, messages oldest first.

mod output;
pub(crate) mod walk;

use crate::api::Answer;
use crate::api::Connection;
use crate::api::client::ApiClient;
use crate::api::history::{self as h, Cursors};
use crate::fetch::limiter::Limiter;
use crate::fetch::retry::RetryPolicy;
use crate::fetch::{Calls, Ended, FetchStats, Rules, StopReason, StopSignal};
use crate::report::ProgressMode;
use futures_util::StreamExt;
use futures_util::stream;
pub(crate) use output::ListOut;
use output::ListWriter;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use walk::{RoamCursor, Stuck};

/// Walks in flight at once: enough to keep 200 calls a second going at a
/// quarter-second latency.
pub(crate) const IN_FLIGHT: usize = 64;

/// Where the messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Every group of these types (`GroupType` names of the API).
    Groups { types: Vec<String> },
    /// The one-to-one conversations of the accounts of this CSV (`UserID`).
    Accounts(PathBuf),
}

/// A validated `msgext discover`.
#[derive(Debug, Clone)]
pub(crate) struct DiscoverPlan {
    pub(crate) api: Connection,
    pub(crate) source: Source,
    /// Messages sent at or after this (Unix seconds).
    pub(crate) since: i64,
    pub(crate) out: ListOut,
    pub(crate) quiet: bool,
}

/// Something the walk could not list: told on stderr and in the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    /// `group @TGS#1`, `account alice`, `conversation alice/bob`.
    pub(crate) what: String,
    pub(crate) code: String,
    pub(crate) info: String,
}

/// How a discovery ended that wrote its list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Found {
    /// Rows written.
    pub(crate) messages: u64,
    /// Groups, or accounts, walked.
    pub(crate) sources: u64,
    /// What the sources are: `groups` or `accounts`.
    pub(crate) source_name: &'static str,
    /// One-to-one conversations read (accounts only).
    pub(crate) conversations: u64,
    /// Not there (a dismissed group, an account never imported): nothing to list.
    pub(crate) gone: Vec<Skipped>,
    /// Given up on after retries: the list misses their messages (exit 3).
    pub(crate) failed: Vec<Skipped>,
    pub(crate) requests: u64,
}

impl Found {
    /// What was skipped or failed, a line each.
    pub(crate) fn told(&self) -> Vec<String> {
        let gone = self
            .gone
            .iter()
            .map(|s| format!("{}: not there ({}: {}); skipped", s.what, s.code, s.info));
        let failed = self.failed.iter().map(|s| {
            format!(
                "warning: {}: failed ({}: {}); its messages are not listed",
                s.what, s.code, s.info
            )
        });
        gone.chain(failed).collect()
    }

    /// The summary: what was listed where, from what, at what cost.
    pub(crate) fn one_line(&self, out: &str) -> String {
        let conversations = match self.source_name {
            "accounts" => format!("{} conversations, ", self.conversations),
            _ => String::new(),
        };
        let failed = match self.failed.len() {
            0 => String::new(),
            n => format!("; {n} failed"),
        };
        format!(
            "{} messages listed in {out} from {} {} ({conversations}{} calls){failed}",
            self.messages, self.sources, self.source_name, self.requests
        )
    }

    /// The last JSON log line (off a terminal), as export's `done`.
    pub(crate) fn json(&self, out: &str) -> String {
        serde_json::json!({
            "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "event": "discover_done",
            "status": if self.failed.is_empty() { "complete" } else { "partial" },
            "out": out,
            "messages": self.messages,
            "sources": self.sources,
            "conversations": self.conversations,
            "gone": self.gone.len(),
            "failed": self.failed.len(),
            "requests": self.requests,
        })
        .to_string()
    }
}

/// Why nothing was written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscoverError {
    /// A usage problem (the accounts file): exit 2.
    #[error("{0}")]
    Usage(String),
    /// The endpoint or the proxy cannot be used: exit 2.
    #[error(transparent)]
    Setup(#[from] crate::api::client::SetupError),
    /// An answer every call would get (auth, region, admin): exit 1.
    #[error("{0}")]
    Fatal(String),
    /// Writing the list failed: exit 1.
    #[error("{0}")]
    Output(String),
    /// Nothing succeeded for `--give-up-after`: exit 1.
    #[error("no call succeeded for {0:?} (last: {1}); nothing written")]
    GaveUp(std::time::Duration, String),
    /// Ctrl-C / SIGTERM: exit 130.
    #[error("interrupted; nothing written")]
    Interrupted,
}

impl DiscoverError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            DiscoverError::Usage(_) | DiscoverError::Setup(_) => 2,
            DiscoverError::Interrupted => 130,
            _ => 1,
        }
    }
}

/// What one walk (a group, an account, a pair) came to.
enum Walked<T> {
    Found(T),
    Gone(Skipped),
    Failed(Skipped),
    /// The run is stopping (fatal answer, interrupt, breaker).
    Stopped(Option<String>),
}

impl<T> Walked<T> {
    fn ended(what: String, end: Ended) -> Self {
        match end {
            Ended::NotFound { code, info } => Walked::Gone(Skipped { what, code, info }),
            Ended::Failed { code, info } => Walked::Failed(Skipped { what, code, info }),
            Ended::Fatal { info, .. } => Walked::Stopped(Some(info)),
            Ended::Cancelled => Walked::Stopped(None),
        }
    }

    fn stuck(what: String, s: Stuck) -> Self {
        let code = "paging_stuck".to_owned();
        Walked::Failed(Skipped {
            what,
            code,
            info: s.0,
        })
    }
}

/// The clients of the four APIs and the calls' rules.
struct Walker {
    calls: Calls,
    /// The group list's calls, at its own 1 call a second.
    list_calls: Calls,
    group_list: ApiClient,
    group_history: ApiClient,
    conversations: ApiClient,
    roam: ApiClient,
    since: i64,
    /// Where roaming ends (Unix seconds): the start of the run.
    now: i64,
    found: AtomicU64,
    walked: AtomicU64,
}

/// What a run walks: group types, or the accounts read from the file.
enum Walk<'a> {
    Groups(&'a [String]),
    Accounts(Vec<String>),
}

/// Run a discovery to its end: the list written, or why not.
pub(crate) async fn run(
    plan: DiscoverPlan,
    progress: ProgressMode,
    retry: RetryPolicy,
    timeout: std::time::Duration,
    stop: StopSignal,
) -> Result<Found, DiscoverError> {
    let stats = Arc::new(FetchStats::default());
    let limiter = Limiter::new(plan.api.rate).map(Arc::new);
    let calls = Calls::new(&plan.api, retry, &stats, &limiter, &stop);
    let client = |path| crate::fetch::client(&plan.api, path, timeout);
    let walker = Arc::new(Walker {
        list_calls: calls.limited_by(Limiter::new(h::GROUP_LIST_RATE).map(Arc::new)),
        calls,
        group_list: client(h::GROUP_LIST_PATH)?,
        group_history: client(h::GROUP_HISTORY_PATH)?,
        conversations: client(h::CONVERSATIONS_PATH)?,
        roam: client(h::ROAM_PATH)?,
        since: plan.since,
        now: chrono::Utc::now().timestamp(),
        found: AtomicU64::new(0),
        walked: AtomicU64::new(0),
    });
    // The accounts file is read whole before any call: a bad one is a usage error.
    let walk = match &plan.source {
        Source::Groups { types } => Walk::Groups(types),
        Source::Accounts(path) => Walk::Accounts(read_accounts(path)?),
    };
    let mut list = ListWriter::create(&plan.out, &plan.source)?;
    let breaker = crate::fetch::spawn_breaker(&stats, &stop, plan.api.give_up_after);
    let (progress_done, reporter) = progress::spawn(walker.clone(), stats.clone(), progress);
    let mut found = match walk {
        Walk::Groups(types) => groups(&walker, types, &mut list).await,
        Walk::Accounts(accounts) => pairs(&walker, accounts, &mut list).await,
    };
    breaker.abort();
    let _ = progress_done.send(());
    let _ = reporter.await;
    if let Ok(f) = &mut found {
        f.requests = stats.requests.load(Ordering::Relaxed);
    }
    match (stop.reason(), found) {
        (_, Err(e)) => Err(e),
        (Some(StopReason::Interrupted), _) => Err(DiscoverError::Interrupted),
        (Some(StopReason::GaveUp), _) => Err(DiscoverError::GaveUp(
            plan.api.give_up_after,
            stats.last_failure().unwrap_or_default(),
        )),
        (Some(StopReason::Fatal), _) => Err(DiscoverError::Fatal("the run stopped".into())),
        (None, Ok(found)) => {
            list.finish()?;
            Ok(found)
        }
    }
}

/// Every group of the types, then each group's messages.
async fn groups(
    walker: &Arc<Walker>,
    types: &[String],
    list: &mut ListWriter,
) -> Result<Found, DiscoverError> {
    let ids = walker.group_ids(types).await?;
    let mut found = Found {
        source_name: "groups",
        ..Found::default()
    };
    let mut walks = stream::iter(ids)
        .map(|id| {
            let walker = walker.clone();
            async move {
                let walked = walker.group_messages(&id).await;
                (id, walked)
            }
        })
        .buffered(IN_FLIGHT);
    while let Some((id, walked)) = walks.next().await {
        found.sources += 1;
        match walked {
            Walked::Found(mut seqs) => {
                seqs.sort_unstable();
                seqs.dedup();
                for seq in seqs {
                    list.row(&[&id, &seq.to_string()])?;
                    found.messages += 1;
                }
            }
            other => tell(other, &mut found)?,
        }
    }
    Ok(found)
}

/// Each account's conversations, then each pair's messages, a pair once.
async fn pairs(
    walker: &Arc<Walker>,
    accounts: Vec<String>,
    list: &mut ListWriter,
) -> Result<Found, DiscoverError> {
    let mut found = Found {
        source_name: "accounts",
        ..Found::default()
    };
    let mut read: HashSet<(String, String)> = HashSet::new();
    let conversations = stream::iter(accounts)
        .map(|account| {
            let walker = walker.clone();
            async move {
                let peers = walker.peers(&account).await;
                (account, peers)
            }
        })
        .buffered(IN_FLIGHT);
    // The peers' list, in order, becomes pairs not read yet (or what an
    // account's list came to); then each pair is walked.
    let mut walks = conversations
        .flat_map(|(account, peers)| {
            let items: Vec<Walked<Pair>> = match peers {
                Walked::Found(peers) => peers
                    .into_iter()
                    .filter(|peer| read.insert(pair_key(&account, peer)))
                    .map(|peer| Walked::Found((account.clone(), peer)))
                    .collect(),
                Walked::Gone(s) => vec![Walked::Gone(s)],
                Walked::Failed(s) => vec![Walked::Failed(s)],
                Walked::Stopped(s) => vec![Walked::Stopped(s)],
            };
            stream::iter(items)
        })
        .map(|item| {
            let walker = walker.clone();
            async move {
                match item {
                    Walked::Found((a, b)) => walker.pair_messages(&a, &b).await,
                    Walked::Gone(s) => Walked::Gone(s),
                    Walked::Failed(s) => Walked::Failed(s),
                    Walked::Stopped(s) => Walked::Stopped(s),
                }
            }
        })
        .buffered(IN_FLIGHT);
    while let Some(walked) = walks.next().await {
        match walked {
            Walked::Found(rows) => {
                found.conversations += 1;
                for (from, to, key) in rows.iter().rev() {
                    list.row(&[from, to, key])?;
                    found.messages += 1;
                }
            }
            other => tell(other, &mut found)?,
        }
    }
    found.sources = walker.walked.load(Ordering::Relaxed);
    Ok(found)
}

/// Two accounts, in one-to-one conversation.
type Pair = (String, String);

/// A pair the same whichever side lists it.
fn pair_key(a: &str, b: &str) -> Pair {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// A walk that found nothing to list, kept in `found` to be told; a stop
/// ends the discovery.
fn tell<T>(walked: Walked<T>, found: &mut Found) -> Result<(), DiscoverError> {
    match walked {
        Walked::Found(_) => {}
        Walked::Gone(s) => found.gone.push(s),
        Walked::Failed(s) => found.failed.push(s),
        Walked::Stopped(Some(info)) => return Err(DiscoverError::Fatal(info)),
        // Interrupted or given up: `run` tells which.
        Walked::Stopped(None) => {}
    }
    Ok(())
}

/// The group list answered 10018 (over 1 MB): ask again with a smaller `Limit`.
const ANSWER_TOO_LARGE: &str = "10018";

impl Walker {
    /// One call of a history API, with the run's retries and stop rules.
    async fn call<R>(
        &self,
        calls: &Calls,
        client: &ApiClient,
        request: &impl serde::Serialize,
        rules: Rules<'_, R>,
    ) -> Result<R, Ended>
    where
        R: Answer + serde::de::DeserializeOwned,
    {
        let body = bytes::Bytes::from(serde_json::to_vec(request).unwrap_or_default());
        let send = |sig: Arc<str>| {
            let body = body.clone();
            async move { client.post::<R>(&sig, body).await }
        };
        let mut attempts = 0;
        calls.retried(&mut attempts, send, rules).await
    }

    /// Every group ID of the types, each once, in the order listed.
    async fn group_ids(&self, types: &[String]) -> Result<Vec<String>, DiscoverError> {
        let mut seen = HashSet::new();
        let mut ids = Vec::new();
        for group_type in types {
            let mut nexts = walk::Seen::default();
            let mut request = h::GroupListRequest {
                limit: Some(h::GROUP_LIST_LIMIT),
                next: None,
                group_type: Some(group_type.clone()),
            };
            loop {
                let rules = Rules {
                    classify: &h::classify_group_list,
                    check: &h::GroupListResponse::check,
                };
                let page = match self
                    .call(&self.list_calls, &self.group_list, &request, rules)
                    .await
                {
                    Ok(page) => page,
                    Err(Ended::Failed { code, .. })
                        if code == ANSWER_TOO_LARGE && request.limit > Some(1) =>
                    {
                        request.limit = request.limit.map(|l| l / 2);
                        continue;
                    }
                    Err(end) => return Err(list_failed(end)),
                };
                for g in page.group_id_list.unwrap_or_default() {
                    if seen.insert(g.group_id.clone()) {
                        ids.push(g.group_id);
                    }
                }
                match page.next {
                    Some(0) | None => break,
                    Some(n) => {
                        if let Err(walk::Stuck(why)) = nexts.fresh(n) {
                            return Err(DiscoverError::Fatal(format!(
                                "the group list: {why}; groups could be missed"
                            )));
                        }
                        request.next = Some(n);
                    }
                }
            }
        }
        Ok(ids)
    }

    /// The seqs of one group's messages in the window, not deleted.
    async fn group_messages(&self, group_id: &str) -> Walked<Vec<u64>> {
        let fetch = |seq: &Option<u64>| {
            let request = h::GroupHistoryRequest {
                group_id: group_id.to_owned(),
                req_msg_number: h::GROUP_HISTORY_PAGE,
                req_msg_seq: *seq,
                with_recalled_msg: Some(1),
            };
            async move {
                let rules = Rules {
                    classify: &h::classify_group_history,
                    check: &h::GroupHistoryResponse::check,
                };
                self.call(&self.calls, &self.group_history, &request, rules)
                    .await
            }
        };
        let step = |page: h::GroupHistoryResponse, seq: &Option<u64>| {
            let step = walk::group_page(&page, *seq, self.since)?;
            let found = step.keep.len() as u64;
            self.found.fetch_add(found, Ordering::Relaxed);
            Ok((step.keep, step.next.map(Some)))
        };
        let what = || format!("group {group_id}");
        let walked = walk(what, None, fetch, step).await;
        self.walked.fetch_add(1, Ordering::Relaxed);
        walked
    }

    /// The one-to-one peers of an account with messages in the window.
    async fn peers(&self, account: &str) -> Walked<Vec<String>> {
        let fetch = |cursors: &Cursors| {
            let request = h::ConversationsRequest {
                from_account: account.to_owned(),
                cursors: *cursors,
                assist_flags: 7,
            };
            async move {
                let rules = Rules {
                    classify: &h::classify_conversations,
                    check: &h::ConversationsResponse::check,
                };
                self.call(&self.calls, &self.conversations, &request, rules)
                    .await
            }
        };
        let step = |page: h::ConversationsResponse, cursors: &Cursors| {
            walk::conversations_page(&page, cursors, self.since)
        };
        let what = || format!("account {account}");
        let walked = walk(what, Cursors::default(), fetch, step).await;
        self.walked.fetch_add(1, Ordering::Relaxed);
        walked
    }

    /// The messages of one pair in the window, each once, newest first.
    async fn pair_messages(
        &self,
        operator: &str,
        peer: &str,
    ) -> Walked<Vec<(String, String, String)>> {
        let fetch = |cursor: &RoamCursor| {
            let request = h::RoamRequest {
                operator_account: operator.to_owned(),
                peer_account: peer.to_owned(),
                max_cnt: h::ROAM_MAX_CNT,
                min_time: self.since,
                max_time: cursor.max_time,
                last_msg_key: cursor.last_msg_key.clone(),
            };
            async move {
                let rules = Rules {
                    classify: &h::classify_roam,
                    check: &h::RoamResponse::check,
                };
                self.call(&self.calls, &self.roam, &request, rules).await
            }
        };
        let mut keys = HashSet::new();
        let step = |page: h::RoamResponse, cursor: &RoamCursor| {
            let (keep, next) = walk::roam_page(&page, cursor, self.since)?;
            let new: Vec<_> = keep
                .into_iter()
                .filter(|m| keys.insert(m.msg_key.clone()))
                .map(|m| {
                    (
                        m.from_account.clone(),
                        m.to_account.clone(),
                        m.msg_key.clone(),
                    )
                })
                .collect();
            self.found.fetch_add(new.len() as u64, Ordering::Relaxed);
            Ok((new, next))
        };
        let first = RoamCursor {
            max_time: self.now,
            last_msg_key: None,
        };
        let what = || format!("conversation {operator}/{peer}");
        walk(what, first, fetch, step).await
    }
}

/// Every page of one walk, the one skeleton of the three cursored
/// history walks: `fetch` asks for the page at a cursor, `step` reads it
/// (what to keep, and the next cursor or the end). A failed call ends
/// the walk as it ended; a cursor given twice, or a page `step` finds
/// stuck, ends it as `paging_stuck`.
async fn walk<C, R, T, F>(
    what: impl Fn() -> String,
    first: C,
    fetch: impl Fn(&C) -> F,
    mut step: impl FnMut(R, &C) -> Result<(Vec<T>, Option<C>), Stuck>,
) -> Walked<Vec<T>>
where
    C: std::hash::Hash + Eq + Clone + std::fmt::Debug,
    F: std::future::Future<Output = Result<R, Ended>>,
{
    let mut seen = walk::Seen::default();
    let mut cursor = first;
    let mut out = Vec::new();
    loop {
        let page = match fetch(&cursor).await {
            Ok(page) => page,
            Err(end) => return Walked::ended(what(), end),
        };
        let next = match step(page, &cursor) {
            Ok((keep, next)) => {
                out.extend(keep);
                next
            }
            Err(stuck) => return Walked::stuck(what(), stuck),
        };
        match next.map(|n| seen.fresh(n.clone()).map(|()| n)) {
            None => return Walked::Found(out),
            Some(Ok(n)) => cursor = n,
            Some(Err(stuck)) => return Walked::stuck(what(), stuck),
        }
    }
}

/// The group list could not be read: nothing can be listed.
fn list_failed(end: Ended) -> DiscoverError {
    match end {
        Ended::Fatal { info, .. } => DiscoverError::Fatal(info),
        Ended::NotFound { code, info } | Ended::Failed { code, info } => DiscoverError::Fatal(
            format!("the group list failed ({code}: {info}); nothing written"),
        ),
        Ended::Cancelled => DiscoverError::Interrupted,
    }
}

/// The accounts of a CSV with a `UserID` column, each once, in file order.
fn read_accounts(path: &std::path::Path) -> Result<Vec<String>, DiscoverError> {
    let usage =
        |e: &dyn std::fmt::Display| DiscoverError::Usage(format!("{}: {e}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| usage(&e))?;
    let headers = reader.headers().map_err(|e| usage(&e))?.clone();
    // Any case, a BOM before it: as the export's input header.
    let Some(col) = headers.iter().position(|h| {
        h.trim_start_matches('\u{feff}')
            .eq_ignore_ascii_case("UserID")
    }) else {
        return Err(usage(&"no UserID column in the header line"));
    };
    let mut seen = HashSet::new();
    let mut accounts = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| usage(&e))?;
        let line = i + 2;
        match record.get(col) {
            Some(id) if !id.is_empty() => {
                if seen.insert(id.to_owned()) {
                    accounts.push(id.to_owned());
                }
            }
            _ => return Err(usage(&format!("line {line}: UserID is empty"))),
        }
    }
    Ok(accounts)
}

/// What the user sees while the walk goes on: how many groups or accounts
/// and messages so far, a line on a terminal, JSON lines elsewhere.
mod progress {
    use super::Walker;
    use crate::fetch::FetchStats;
    use crate::report::{JSON_EVERY, ProgressMode};
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    /// Runs until the sender is dropped or sent on.
    pub(super) fn spawn(
        walker: Arc<Walker>,
        stats: Arc<FetchStats>,
        mode: ProgressMode,
    ) -> (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let (done, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let bar = (mode == ProgressMode::Bar).then(indicatif::ProgressBar::new_spinner);
            let mut last_json = started;
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut done_rx => break,
                }
                let (walked, messages, requests) = (
                    walker.walked.load(Ordering::Relaxed),
                    walker.found.load(Ordering::Relaxed),
                    stats.requests.load(Ordering::Relaxed),
                );
                if let Some(bar) = &bar {
                    bar.set_message(format!(
                        "{walked} walked  {messages} messages  {requests} calls"
                    ));
                    bar.tick();
                } else if mode == ProgressMode::JsonLines && last_json.elapsed() >= JSON_EVERY {
                    last_json = std::time::Instant::now();
                    let line = serde_json::json!({
                        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        "event": "discover_progress",
                        "walked": walked,
                        "messages": messages,
                        "requests": requests,
                        "elapsed_secs": started.elapsed().as_secs(),
                    });
                    eprintln!("{line}");
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        (done, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The accounts header is read as the export's input header: any case,
    /// a BOM, CRLF; each account once; an empty one names its line.
    #[test]
    fn accounts_are_read_once_each_with_any_header_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        std::fs::write(
            &path,
            "\u{feff}note,userid\r\nx, alice\r\ny,bob\r\nz,alice\r\n",
        )
        .unwrap();
        assert_eq!(read_accounts(&path).unwrap(), ["alice", "bob"]);
        std::fs::write(&path, "UserID\nalice\n\"\"\n").unwrap();
        let e = read_accounts(&path).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("a.csv"), "{e}");
    }

    /// The walk's skeleton: pages until the end, a failed call ends it as
    /// the call ended, a cursor given twice (OK answers going round) or a
    /// page found stuck ends it as `paging_stuck`, never for ever.
    #[tokio::test]
    async fn a_walk_ends_at_the_end_a_failure_or_a_cursor_seen_before() {
        // Pages by cursor: (what it lists, the next cursor); 9 fails, 7 is stuck.
        let pages = |c: &u32| {
            let page = match *c {
                9 => Err(Ended::Failed {
                    code: "10002".into(),
                    info: "busy".into(),
                }),
                c => Ok(c),
            };
            // A real call yields; so does this one, so that the timeout below can fire.
            async move {
                tokio::task::yield_now().await;
                page
            }
        };
        // (the next cursor of each page, what the walk comes to); it starts at 0.
        type Case = (&'static [Option<u32>], Result<Vec<u32>, &'static str>);
        let cases: [Case; 4] = [
            (&[Some(1), Some(2), None], Ok(vec![0, 1, 2])),
            (&[Some(1), Some(0)], Err("paging_stuck")),
            (&[Some(9)], Err("10002")),
            (&[Some(7)], Err("paging_stuck")),
        ];
        for (nexts, want) in cases {
            let step = |page: u32, _: &u32| match page {
                7 => Err(Stuck("no progress".into())),
                p => Ok((vec![p], nexts[p as usize])),
            };
            // A walk going round for ever fails here, not by hanging the suite.
            let walked = walk(|| "it".into(), 0, pages, step);
            let walked = tokio::time::timeout(std::time::Duration::from_secs(10), walked);
            let got = match walked.await.expect("the walk ended") {
                Walked::Found(v) => Ok(v),
                Walked::Failed(s) | Walked::Gone(s) => Err(s.code),
                Walked::Stopped(_) => Err("stopped".into()),
            };
            assert_eq!(got, want.map_err(str::to_owned), "{nexts:?}");
        }
    }
}
