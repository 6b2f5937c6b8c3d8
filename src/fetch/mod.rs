//! Fetching: every page of one message with retries, under one rate limiter
//! shared by all workers, giving a `FetchOutcome`. A message that cannot be
//! exported is data (`Failed`, `NotFound`), not an error; `Fatal` means the
//! whole run must stop. Writes no files.

pub(crate) mod concurrency;
pub(crate) mod limiter;
pub(crate) mod pager;
pub mod retry;

use crate::api::client::{ApiClient, CallError, Credentials};
use crate::api::sign::DEFAULT_EXPIRE_SECS;
use crate::api::wire::GetKeyValuesResponse;
use crate::api::{Answer, BadAnswer, Connection, Secret};
use crate::incremental::{Prior, Read, Start, Verdict};
use crate::model::MessageId;
use limiter::Limiter;
use pager::{PagedMessage, Pager, Step};
use retry::{Action, RetryPolicy, classify};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchOutcome {
    Exported {
        paged: PagedMessage,
        attempts: u32,
        /// How it was read (`Read::Full` unless the current tables knew it).
        read: Read,
    },
    /// The message does not exist (23004; for groups also 10010, 10015).
    NotFound {
        code: String,
        attempts: u32,
        pages: u32,
        info: String,
    },
    /// Given up on; the run goes on.
    Failed {
        code: String,
        info: String,
        attempts: u32,
        pages: u32,
    },
    /// An answer that means every later call fails too: the run stops.
    Fatal {
        code: String,
        info: String,
        attempts: u32,
    },
    /// The run was stopping before this message could finish.
    Cancelled { attempts: u32, pages: u32 },
}

/// Count `pages` more pages (an incremental read before a full one) in an outcome.
fn add_pages(out: &mut FetchOutcome, more: u32) {
    match out {
        FetchOutcome::Exported { paged, .. } => paged.pages += more,
        FetchOutcome::NotFound { pages, .. }
        | FetchOutcome::Failed { pages, .. }
        | FetchOutcome::Cancelled { pages, .. } => *pages += more,
        FetchOutcome::Fatal { .. } => {}
    }
}

/// Why the run is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// An answer that every call would get (auth, region, plan), or unreadable input.
    Fatal,
    /// Ctrl-C / SIGTERM.
    Interrupted,
    /// Nothing succeeded for `--give-up-after`: the circuit breaker opened.
    GaveUp,
}

/// A one-way switch every worker watches: set once, wakes all waiters.
#[derive(Debug, Clone)]
pub struct StopSignal {
    tx: Arc<tokio::sync::watch::Sender<Option<StopReason>>>,
}

impl Default for StopSignal {
    fn default() -> Self {
        StopSignal {
            tx: Arc::new(tokio::sync::watch::channel(None).0),
        }
    }
}

impl StopSignal {
    /// The first reason given wins.
    pub(crate) fn trigger(&self, reason: StopReason) {
        self.tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        *self.tx.borrow()
    }

    pub(crate) async fn stopped(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|r| r.is_some()).await;
    }
}

/// Counters shared by all workers.
#[derive(Debug)]
pub(crate) struct FetchStats {
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    /// When the API last gave a definitive answer (data, not found, a
    /// message-level error), in ms since `epoch`: what the circuit breaker watches.
    last_progress_ms: AtomicU64,
    /// Moving average of call latency, µs.
    latency_us: AtomicU64,
    epoch: std::time::Instant,
    /// The last answer that was not a success: what the circuit breaker reports.
    last_failure: std::sync::Mutex<Option<(String, String)>>,
}

impl Default for FetchStats {
    fn default() -> Self {
        FetchStats {
            requests: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            last_progress_ms: AtomicU64::new(0),
            latency_us: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            last_failure: std::sync::Mutex::new(None),
        }
    }
}

impl FetchStats {
    fn progressed(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_progress_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Fold one call's latency into the moving average (weight 1/8).
    pub(crate) fn record_latency(&self, d: Duration) {
        let sample = d.as_micros().min(u128::from(u32::MAX)) as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_us.load(Ordering::Relaxed))
    }

    /// Remember the last failed attempt (code, info), secrets removed.
    pub(crate) fn record_failure(&self, code: &str, info: &str) {
        let mut last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some((code.to_owned(), crate::report::redact(info).into_owned()));
    }

    /// The last failed attempt, as `code: info`.
    pub(crate) fn last_failure(&self) -> Option<String> {
        let last = self.last_failure.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref().map(|(c, i)| format!("{c}: {i}"))
    }

    /// How long since the API last gave a definitive answer (or since the start).
    pub(crate) fn since_progress(&self) -> Duration {
        let last = Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// Until one call has had a definitive answer from the API, calls go one at a
/// time: a wrong secret, SDKAppID, region or plan then costs one call, not
/// one per worker. Once open, the gate costs an atomic load per call.
#[derive(Debug)]
pub(crate) struct ProbeGate {
    open: tokio::sync::watch::Sender<bool>,
    one: tokio::sync::Semaphore,
}

impl Default for ProbeGate {
    fn default() -> Self {
        ProbeGate {
            open: tokio::sync::watch::channel(false).0,
            one: tokio::sync::Semaphore::new(1),
        }
    }
}

impl ProbeGate {
    /// Wait for the right to call: `Some(permit)` for the one probing call,
    /// `None` once the gate is open.
    pub(crate) async fn enter(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if *self.open.borrow() {
            return None;
        }
        let mut rx = self.open.subscribe();
        tokio::select! {
            permit = self.one.acquire() => permit.ok().filter(|_| !*self.open.borrow()),
            _ = rx.wait_for(|open| *open) => None,
        }
    }

    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }

    pub(crate) fn is_open(&self) -> bool {
        *self.open.borrow()
    }
}

/// One call of the API, as the fetcher needs it: a trait, so that the
/// retry, renewal, probe and stop logic can be tested against a scripted
/// fake under paused time. `ApiClient` is the real one.
pub(crate) trait Call: Clone + Send + Sync + 'static {
    fn call(
        &self,
        usersig: Arc<str>,
        body: bytes::Bytes,
    ) -> impl std::future::Future<Output = Result<GetKeyValuesResponse, CallError>> + Send;
}

impl Call for ApiClient {
    async fn call(
        &self,
        usersig: Arc<str>,
        body: bytes::Bytes,
    ) -> Result<GetKeyValuesResponse, CallError> {
        self.post(&usersig, body).await
    }
}

/// The rules every call of a run follows, whatever the API: the credentials,
/// the shared limiter, the probe gate, the retry policy, the counters and the
/// stop switch. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Calls {
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) limiter: Option<Arc<Limiter>>,
    pub(crate) gate: Arc<ProbeGate>,
    pub(crate) policy: RetryPolicy,
    pub(crate) stats: Arc<FetchStats>,
    pub(crate) stop: StopSignal,
    pub(crate) target: Target,
}

impl Calls {
    /// A run's calls to `conn`: credentials from its secret, the retry
    /// policy capped by its attempts and circuit breaker, one probe gate.
    pub(crate) fn new(
        conn: &Connection,
        retry: RetryPolicy,
        stats: &Arc<FetchStats>,
        limiter: &Option<Arc<Limiter>>,
        stop: &StopSignal,
    ) -> Self {
        let credentials = Arc::new(match &conn.secret {
            Secret::Key(k) => Credentials::from_secret(
                k.clone(),
                conn.sdkappid,
                &conn.identifier,
                DEFAULT_EXPIRE_SECS,
            ),
            Secret::UserSig(s) => Credentials::ready(s),
        });
        Calls {
            credentials,
            limiter: limiter.clone(),
            gate: Arc::new(ProbeGate::default()),
            policy: RetryPolicy {
                max_attempts: conn.max_attempts,
                // No wait outlasts the circuit breaker.
                max_wait: retry.max_wait.min(conn.give_up_after),
                ..retry
            },
            stats: stats.clone(),
            stop: stop.clone(),
            target: Target {
                sdkappid: conn.sdkappid,
                region: crate::api::Region::from_base_url(&conn.base_url),
                endpoint: conn.base_url.clone(),
            },
        }
    }

    /// The same calls under another limiter (an API with a quota of its own).
    pub(crate) fn limited_by(&self, limiter: Option<Arc<Limiter>>) -> Self {
        Calls {
            limiter,
            ..self.clone()
        }
    }
}

/// The client of one API path of `conn`'s endpoint, calls through the
/// environment's proxies; the error names the setting to fix.
pub(crate) fn client(
    conn: &Connection,
    path: &str,
    timeout: Duration,
) -> Result<ApiClient, crate::api::client::SetupError> {
    ApiClient::new(
        &conn.base_url,
        path,
        conn.sdkappid,
        &conn.identifier,
        timeout,
        &crate::api::client::Proxies::Environment,
    )
}

/// How a call ended without an answer to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// What was asked for does not exist (a final answer).
    NotFound { code: String, info: String },
    /// Given up on; the run goes on.
    Failed { code: String, info: String },
    /// Every later call would fail too: the run stops (already triggered).
    Fatal { code: String, info: String },
    /// The run was stopping.
    Cancelled,
}

impl Ended {
    /// As the outcome of a message `attempts` calls and `pages` pages in.
    fn outcome(self, attempts: u32, pages: u32) -> FetchOutcome {
        match self {
            Ended::NotFound { code, info } => FetchOutcome::NotFound {
                code,
                attempts,
                pages,
                info,
            },
            Ended::Failed { code, info } => FetchOutcome::Failed {
                code,
                info,
                attempts,
                pages,
            },
            Ended::Fatal { code, info } => FetchOutcome::Fatal {
                code,
                info,
                attempts,
            },
            Ended::Cancelled => FetchOutcome::Cancelled { attempts, pages },
        }
    }
}

/// What a caller of `Calls::retried` says about its API: how it reads the
/// codes, and whether an OK answer is whole.
pub(crate) struct Rules<'a, R> {
    pub(crate) classify: &'a (dyn Fn(i64) -> Action + Sync),
    pub(crate) check: &'a (dyn Fn(&R) -> Result<(), BadAnswer> + Sync),
}

/// Fetches messages; cheap to clone, one per worker.
#[derive(Clone)]
pub(crate) struct Fetcher<C: Call = ApiClient> {
    pub(crate) client: C,
    pub(crate) calls: Calls,
    /// What the current tables knew when the run began (empty: every read is full).
    pub(crate) prior: Arc<Prior>,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

enum Attempt {
    Page(GetKeyValuesResponse),
    End(FetchOutcome),
}

impl<C: Call> Fetcher<C> {
    /// Read `msg`: from after what the current tables know of it (DESIGN
    /// §7), or in full when they know nothing, a full read is due, or the
    /// answer shows a change it cannot tell.
    pub(crate) async fn fetch(&self, msg: &MessageId) -> FetchOutcome {
        let (start, known) = self.prior.plan(msg.state_fingerprint());
        let mut attempts = 0u32;
        let (Start::From(seq), Some(known)) = (start, known) else {
            return self.read(msg, None, &mut attempts, Read::Full).await;
        };
        let paged = match self.drain(msg, Some(seq), &mut attempts).await {
            Ok(paged) => paged,
            Err(end) => return end,
        };
        let seqs = paged.pairs.iter().map(|p| p.seq);
        let read = match crate::incremental::judge(&known, paged.latest_seq, paged.clear_seq, seqs)
        {
            Verdict::Unchanged => Read::Unchanged,
            Verdict::Changed { .. } => Read::Incremental,
            Verdict::ReadFull => {
                let pages = paged.pages;
                let mut out = self.read(msg, None, &mut attempts, Read::Full).await;
                add_pages(&mut out, pages);
                return out;
            }
        };
        FetchOutcome::Exported {
            paged,
            attempts,
            read,
        }
    }

    async fn read(
        &self,
        msg: &MessageId,
        start_seq: Option<i64>,
        attempts: &mut u32,
        read: Read,
    ) -> FetchOutcome {
        match self.drain(msg, start_seq, attempts).await {
            Ok(paged) => FetchOutcome::Exported {
                paged,
                attempts: *attempts,
                read,
            },
            Err(end) => end,
        }
    }

    /// Every page of `msg` from `start_seq`, or how the message ended.
    async fn drain(
        &self,
        msg: &MessageId,
        start_seq: Option<i64>,
        attempts: &mut u32,
    ) -> Result<PagedMessage, FetchOutcome> {
        let mut pager = Pager::starting_at(start_seq);
        loop {
            let page = match self.fetch_page(msg, &pager, attempts).await {
                Attempt::Page(p) => p,
                Attempt::End(outcome) => return Err(outcome),
            };
            match pager.accept(page, now_us()) {
                Step::Next(_) => continue,
                Step::Done => return Ok(pager.finish()),
                Step::Stuck => {
                    return Err(FetchOutcome::Failed {
                        code: "paging_stuck".into(),
                        info: format!(
                            "the API kept answering StartSeq {:?} without progress; pairs could be missed",
                            pager.start_seq()
                        ),
                        attempts: *attempts,
                        pages: pager.pages(),
                    });
                }
            }
        }
    }

    /// One page, retried per policy.
    async fn fetch_page(&self, msg: &MessageId, pager: &Pager, attempts: &mut u32) -> Attempt {
        let body = bytes::Bytes::from(msg.request_body(pager.start_seq()));
        let kind = msg.kind();
        let client = &self.client;
        let rules = Rules {
            classify: &|code| kind.classify_code(code),
            check: &|page| pager.check(page),
        };
        let send = |sig| client.call(sig, body.clone());
        match self.calls.retried(attempts, send, rules).await {
            Ok(page) => Attempt::Page(page),
            Err(end) => Attempt::End(end.outcome(*attempts, pager.pages())),
        }
    }
}

impl Calls {
    /// One call (`send`, given the UserSig), retried per policy: the answer
    /// to take, or how the call ended. `attempts` counts every try.
    pub(crate) async fn retried<R, F, Fut>(
        &self,
        attempts: &mut u32,
        send: F,
        rules: Rules<'_, R>,
    ) -> Result<R, Ended>
    where
        R: Answer,
        F: Fn(Arc<str>) -> Fut,
        Fut: std::future::Future<Output = Result<R, CallError>>,
    {
        let mut tries = 0u32;
        let mut renewed = false;
        loop {
            let Some(probe) = self.wait_turn().await else {
                return Err(Ended::Cancelled);
            };
            tries += 1;
            *attempts += 1;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sig = self.credentials.usersig(chrono::Utc::now().timestamp());
            let sent = std::time::Instant::now();
            let answer = send(sig).await;
            self.stats.record_latency(sent.elapsed());
            let Judged {
                action,
                code,
                info,
                retry_after,
            } = match self.judge(&rules, answer) {
                Ok(answer) => return Ok(answer),
                Err(j) => j,
            };
            let backoff = match action {
                Action::NotFound => return Err(Ended::NotFound { code, info }),
                Action::FailMessage => return Err(Ended::Failed { code, info }),
                Action::RenewSignature if self.credentials.can_renew() && !renewed => {
                    self.credentials.renew();
                    renewed = true;
                    continue;
                }
                // Stop while this call still holds the probe permit, so that
                // no other call starts.
                Action::FailRun | Action::RenewSignature => return Err(self.fail_run(code, &info)),
                Action::Retry | Action::Success => self.policy.transient,
                Action::RateLimited => self.policy.rate_limited,
            };
            // What the circuit breaker names if nothing succeeds from here on
            // (a not-found or a failed message is an answer, not this).
            self.stats.record_failure(&code, &info);
            if tries >= self.policy.max_attempts {
                let info = format!("{info} (gave up after {tries} attempts)");
                return Err(Ended::Failed { code, info });
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            drop(probe);
            let delay = retry::retry_delay(
                &backoff,
                tries,
                rand::random::<f64>(),
                retry_after,
                self.policy.max_wait,
            );
            tracing::debug!(
                code = %code,
                attempt = tries,
                delay_ms = delay.as_millis() as u64,
                "retrying a call"
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.stopped() => {}
            }
        }
    }

    /// Wait for the right to make a call: the probe gate (one call at a time
    /// until the API has answered), then the rate limiter. `None` when the
    /// run stops meanwhile; `Some(Some(permit))` for the probing call.
    async fn wait_turn(&self) -> Option<Option<tokio::sync::SemaphorePermit<'_>>> {
        if self.stop.reason().is_some() {
            return None;
        }
        let probe = tokio::select! {
            p = self.gate.enter() => p,
            _ = self.stop.stopped() => return None,
        };
        if let Some(limiter) = &self.limiter {
            tokio::select! {
                _ = limiter.acquire() => {}
                _ = self.stop.stopped() => return None,
            }
        }
        self.stop.reason().is_none().then_some(probe)
    }

    /// What one answer means: an answer to take (`Ok`), or what to do
    /// about it. Feeds the limiter and the probe gate on the way.
    fn judge<R: Answer>(
        &self,
        rules: &Rules<'_, R>,
        answer: Result<R, CallError>,
    ) -> Result<R, Judged> {
        match answer {
            Ok(r) => {
                let action = (rules.classify)(r.error_code());
                match (action, (rules.check)(&r)) {
                    (Action::Success, Ok(())) => {
                        self.observe(action);
                        Ok(r)
                    }
                    // An OK answer that cannot be the whole truth: a bad
                    // response, retried like an unparseable body.
                    (Action::Success, Err(bad)) => {
                        let e = CallError::Decode(bad.to_string());
                        Err(Judged::of(classify(&e), &e))
                    }
                    (action, _) => {
                        self.observe(action);
                        Err(Judged {
                            action,
                            code: r.error_code().to_string(),
                            info: r.into_info(),
                            retry_after: None,
                        })
                    }
                }
            }
            Err(e) => {
                let action = classify(&e);
                if action == Action::RateLimited {
                    // HTTP 429 from a gateway slows the run like the quota codes.
                    self.observe(action);
                }
                if !self.gate.is_open() && matches!(e, CallError::Connect(_)) {
                    // Nothing has answered yet and the endpoint cannot be
                    // reached (refused, no such name, TLS to a plain port):
                    // every call would fail the same way. After the first
                    // good answer this is a transient failure like any other.
                    return Err(Judged {
                        action: Action::FailRun,
                        code: "network".into(),
                        info: e.to_string(),
                        retry_after: None,
                    });
                }
                Err(Judged::of(action, &e))
            }
        }
    }

    /// Stop the run on an answer every later call would get too.
    fn fail_run(&self, code: String, info: &str) -> Ended {
        self.stop.trigger(StopReason::Fatal);
        Ended::Fatal {
            info: explain_fatal(&code, info, &self.target),
            code,
        }
    }

    /// Feed a decoded API answer to the limiter, the probe gate and the circuit breaker.
    fn observe(&self, action: Action) {
        match action {
            Action::RateLimited => {
                self.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
                if let Some(l) = &self.limiter {
                    l.on_quota();
                }
                self.gate.open();
            }
            Action::FailRun => {}
            Action::Retry | Action::RenewSignature => {
                if let Some(l) = &self.limiter {
                    l.on_accepted();
                }
            }
            Action::Success | Action::NotFound | Action::FailMessage => {
                if let Some(l) = &self.limiter {
                    l.on_accepted();
                }
                self.gate.open();
                self.stats.progressed();
            }
        }
    }
}

/// An answer that is not a page to take, and what to do about it.
struct Judged {
    action: Action,
    code: String,
    info: String,
    retry_after: Option<Duration>,
}

impl Judged {
    fn of(action: Action, e: &CallError) -> Self {
        Judged {
            action,
            code: e.code(),
            info: e.to_string(),
            retry_after: match e {
                CallError::Http { retry_after, .. } => *retry_after,
                _ => None,
            },
        }
    }
}

/// The circuit breaker: stop when no call has had a definitive answer for
/// `give_up_after` while calls were being made.
pub(crate) fn spawn_breaker(
    stats: &Arc<FetchStats>,
    stop: &StopSignal,
    give_up_after: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let (stats, stop) = (stats.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(std::time::Duration::from_millis(200).min(give_up_after));
        loop {
            tick.tick().await;
            if stop.reason().is_some() {
                return;
            }
            if stats.since_progress() >= give_up_after && stats.requests.load(Ordering::Relaxed) > 0
            {
                stop.trigger(StopReason::GaveUp);
                return;
            }
        }
    })
}

/// The app a run calls, as named in messages that stop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) sdkappid: u64,
    /// The data center, when the endpoint is one of Tencent's.
    pub(crate) region: Option<crate::api::Region>,
    /// The base URL called (a region's or `--endpoint`).
    pub(crate) endpoint: String,
}

/// What a user should do about an answer that stops the run.
pub(crate) fn explain_fatal(code: &str, info: &str, target: &Target) -> String {
    let sdkappid = target.sdkappid;
    let center = match target.region {
        Some(r) => format!("the {r} data center"),
        None => "this endpoint's data center".to_owned(),
    };
    let hint = match code {
        "70001" => "the UserSig has expired and cannot be renewed: give the secret key (MSGEXT_SECRET_KEY or --secret-key-file) or a fresh MSGEXT_USERSIG".to_owned(),
        "70002" | "70003" | "70005" | "70009" | "70010" => {
            "the UserSig was refused: check that the secret key belongs to this SDKAppID".to_owned()
        }
        "70013" => "the UserSig was made for another identifier: check --identifier".to_owned(),
        "70014" => "the UserSig was made for another SDKAppID: check --sdkappid".to_owned(),
        "70016" | "70020" => format!(
            "SDKAppID {sdkappid} is not in {center}: check --sdkappid, or try another --region"
        ),
        "10008" => "this app's plan has no message extensions (a Premium edition feature)".to_owned(),
        // rustls's words for a certificate it refuses (UnknownIssuer,
        // expired, not valid for the name...).
        "network" if info.contains("certificate") => format!(
            "the TLS certificate of {} is not trusted here: check the system's CA certificates \
             (SSL_CERT_FILE / SSL_CERT_DIR name others) and whether a proxy re-signs TLS",
            target.endpoint
        ),
        // The client's words for a connection that failed at a proxy
        // (refused, closed, 407): the API was never reached.
        "network" | "timeout" if info.contains("through the proxy ") => {
            "the proxy refused or dropped the connection, so the API was never reached: check \
             HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, NO_PROXY and the proxy's credentials"
                .to_owned()
        }
        // Refused, a name that does not resolve, a reset: nothing answered.
        "network" if info.starts_with("cannot connect: ") => format!(
            "nothing answered at {}: check --region / --endpoint and the network (DNS, a firewall, \
             a proxy that HTTPS_PROXY should name)",
            target.endpoint
        ),
        "network" | "timeout" | "bad_response" => format!(
            "{} did not answer like the Chat REST API: check --region / --endpoint and the network",
            target.endpoint
        ),
        c if c.starts_with("http_3") => {
            "the endpoint redirects, which the Chat REST API does not; msgext does not follow it (the UserSig would go along): give the final URL as --endpoint".to_owned()
        }
        c if c.starts_with("http_") => {
            "the endpoint did not answer like the Chat REST API: check --region / --endpoint".to_owned()
        }
        _ => "every later call would fail the same way".to_owned(),
    };
    format!("error {code}: {info} — {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_explanations_say_what_to_fix() {
        let sgp = Target {
            sdkappid: 1400000123,
            region: Some(crate::api::Region::Singapore),
            endpoint: "https://adminapisgp.im.qcloud.com".into(),
        };
        let e = explain_fatal("70020", "x", &sgp);
        assert!(
            e.contains("SDKAppID 1400000123 is not in the singapore data center"),
            "{e}"
        );
        assert!(e.contains("--region"));
        let local = Target {
            sdkappid: 1,
            region: None,
            endpoint: "http://127.0.0.1:9".into(),
        };
        assert!(explain_fatal("70016", "x", &local).contains("this endpoint"));
        assert!(explain_fatal("70003", "bad sig", &local).contains("secret key"));
        assert!(explain_fatal("10008", "", &local).contains("plan"));
        assert!(explain_fatal("http_301", "", &local).contains("redirects"));
        assert!(explain_fatal("http_404", "", &local).contains("did not answer like"));
        let e = explain_fatal(
            "network",
            "cannot connect: invalid peer certificate: UnknownIssuer",
            &sgp,
        );
        assert!(
            e.contains("TLS certificate of https://adminapisgp.im.qcloud.com is not trusted")
                && e.contains("SSL_CERT_FILE"),
            "{e}"
        );
        for info in [
            "cannot connect: through the proxy http://127.0.0.1:3128: tunnel error: proxy authorization required",
            "cannot connect: through the proxy http://127.0.0.1:3128: connection refused",
            "cannot connect: through the proxy http://127.0.0.1:3128: connection closed",
        ] {
            let e = explain_fatal("network", info, &sgp);
            assert!(
                e.contains("http://127.0.0.1:3128")
                    && e.contains("HTTPS_PROXY")
                    && !e.contains("--region")
                    && !e.contains("--endpoint"),
                "{e}"
            );
        }
        for info in [
            "cannot connect: Connection refused (os error 111)",
            "cannot connect: dns error: failed to lookup address information",
        ] {
            let e = explain_fatal("network", info, &local);
            assert!(
                e.contains("nothing answered at http://127.0.0.1:9")
                    && e.contains(info)
                    && !e.contains("like the Chat REST API"),
                "{e}"
            );
        }
        assert!(explain_fatal("bad_response", "not JSON", &local).contains("did not answer like"));
    }

    use crate::api::wire::ExtensionList;
    use crate::kind::MessageRef;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A scripted API: answers in order, then the last one for ever.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<VecDeque<Result<GetKeyValuesResponse, CallError>>>>,
        calls: Arc<AtomicU64>,
    }

    impl Script {
        fn new(answers: Vec<Result<GetKeyValuesResponse, CallError>>) -> Self {
            Script {
                answers: Arc::new(Mutex::new(answers.into())),
                calls: Arc::default(),
            }
        }
        fn calls(&self) -> u64 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Call for Script {
        async fn call(
            &self,
            _usersig: Arc<str>,
            _body: bytes::Bytes,
        ) -> Result<GetKeyValuesResponse, CallError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut a = self.answers.lock().unwrap();
            if a.len() > 1 {
                a.pop_front().unwrap()
            } else {
                a.front().unwrap().clone()
            }
        }
    }

    fn page() -> Result<GetKeyValuesResponse, CallError> {
        Ok(GetKeyValuesResponse {
            action_status: Some("OK".into()),
            error_code: 0,
            error_info: String::new(),
            complete_flag: Some(1),
            latest_seq: Some(1),
            clear_seq: Some(0),
            extension_list: Some(ExtensionList::of([("k", "v", 1)])),
        })
    }

    fn http(status: u16, retry_after: Option<u64>) -> Result<GetKeyValuesResponse, CallError> {
        Err(CallError::Http {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        })
    }

    fn fetcher(script: &Script) -> Fetcher<Script> {
        Fetcher {
            client: script.clone(),
            calls: Calls {
                credentials: Arc::new(Credentials::from_secret(
                    "key".into(),
                    1,
                    "administrator",
                    86400,
                )),
                limiter: None,
                gate: Arc::new(ProbeGate::default()),
                policy: RetryPolicy::default(),
                stats: Arc::new(FetchStats::default()),
                stop: StopSignal::default(),
                target: Target {
                    sdkappid: 1,
                    region: None,
                    endpoint: "http://api".into(),
                },
            },
            prior: Arc::default(),
        }
    }

    fn msg() -> MessageId {
        MessageRef::new(Some("a"), "b", "1_2_3").into()
    }

    #[tokio::test(start_paused = true)]
    async fn five_hundred_n_times_then_200_is_retried_with_capped_backoff() {
        for n in [1usize, 3, 7] {
            let mut answers: Vec<_> = (0..n).map(|_| http(500, None)).collect();
            answers.push(page());
            let script = Script::new(answers);
            let f = fetcher(&script);
            let started = tokio::time::Instant::now();
            let out = f.fetch(&msg()).await;
            let FetchOutcome::Exported {
                attempts, paged, ..
            } = out
            else {
                panic!("n={n}: {out:?}");
            };
            assert_eq!((attempts as usize, paged.pairs.len()), (n + 1, 1), "n={n}");
            assert_eq!(f.calls.stats.retries.load(Ordering::Relaxed) as usize, n);
            // Full jitter under ceilings of 100 ms doubling to 10 s.
            let ceiling: u64 = (1..=n as u32)
                .map(|r| f.calls.policy.transient.ceiling(r).as_millis() as u64)
                .sum();
            assert!(started.elapsed() <= Duration::from_millis(ceiling), "n={n}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn five_hundred_for_ever_fails_the_message_after_max_attempts() {
        let script = Script::new(vec![page(), http(500, None)]);
        let f = fetcher(&script);
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Exported { .. }
        ));
        let out = f.fetch(&msg()).await;
        let FetchOutcome::Failed {
            code,
            info,
            attempts,
            ..
        } = out
        else {
            panic!("{out:?}");
        };
        assert_eq!((code.as_str(), attempts), ("http_500", 8));
        assert!(info.contains("gave up after 8 attempts"), "{info}");
        assert_eq!(script.calls(), 9);
        assert_eq!(
            f.calls.stop.reason(),
            None,
            "one message's failure is not the run's"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_names_retried_failures_not_answers() {
        let not_found = || {
            Ok(GetKeyValuesResponse::error(
                crate::codes::NOT_FOUND,
                "no such message",
            ))
        };
        let script = Script::new(vec![not_found(), http(503, None), page()]);
        let f = fetcher(&script);
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::NotFound { .. }
        ));
        assert_eq!(
            f.calls.stats.last_failure(),
            None,
            "a not-found is an answer"
        );
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Exported { .. }
        ));
        let last = f.calls.stats.last_failure().unwrap_or_default();
        assert!(last.starts_with("http_503"), "{last}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_hour_of_retry_after_waits_at_most_max_wait() {
        let script = Script::new(vec![http(503, Some(3600)), page()]);
        let mut f = fetcher(&script);
        f.calls.policy.max_wait = Duration::from_secs(20);
        let started = tokio::time::Instant::now();
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Exported { attempts: 2, .. }
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_error_stops_the_run_before_any_answer_but_is_retried_after_one() {
        let refused = || Err(CallError::Connect("Connection refused".into()));
        let script = Script::new(vec![refused()]);
        let f = fetcher(&script);
        let out = f.fetch(&msg()).await;
        let FetchOutcome::Fatal {
            code,
            info,
            attempts,
        } = out
        else {
            panic!("{out:?}");
        };
        assert_eq!((code.as_str(), attempts), ("network", 1));
        assert!(
            info.contains("http://api") && info.contains("refused"),
            "{info}"
        );
        assert_eq!(f.calls.stop.reason(), Some(StopReason::Fatal));

        let script = Script::new(vec![page(), refused(), refused(), page()]);
        let f = fetcher(&script);
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Exported { .. }
        ));
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Exported { attempts: 3, .. }
        ));
        assert_eq!(f.calls.stop.reason(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_usersig_is_renewed_once_then_the_run_stops() {
        let expired = || {
            Ok(GetKeyValuesResponse::error(
                crate::codes::SIG_EXPIRED,
                "expired",
            ))
        };
        let script = Script::new(vec![expired(), page()]);
        let f = fetcher(&script);
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Exported { attempts: 2, .. }
        ));
        let script = Script::new(vec![expired()]);
        let f = fetcher(&script);
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Fatal { attempts: 2, .. }
        ));
        assert_eq!(script.calls(), 2, "renewed once, then stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_backoff_ends_the_fetch_at_once() {
        let script = Script::new(vec![page(), http(503, Some(3600))]);
        let f = fetcher(&script);
        assert!(matches!(
            f.fetch(&msg()).await,
            FetchOutcome::Exported { .. }
        ));
        let stop = f.calls.stop.clone();
        let fetch = tokio::spawn(async move { f.fetch(&msg()).await });
        // Let the first attempt happen and the backoff begin.
        while script.calls() < 2 {
            tokio::task::yield_now().await;
        }
        let started = tokio::time::Instant::now();
        stop.trigger(StopReason::Interrupted);
        let out = fetch.await.unwrap();
        assert!(
            matches!(out, FetchOutcome::Cancelled { attempts: 1, .. }),
            "{out:?}"
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn stop_signal_keeps_the_first_reason_and_wakes_waiters() {
        let s = StopSignal::default();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.stopped().await }
        });
        assert_eq!(s.reason(), None);
        s.trigger(StopReason::Interrupted);
        s.trigger(StopReason::Fatal);
        waiter.await.unwrap();
        assert_eq!(s.reason(), Some(StopReason::Interrupted));
    }

    #[tokio::test]
    async fn the_probe_gate_lets_one_call_through_until_it_opens() {
        let gate = Arc::new(ProbeGate::default());
        let first = gate.enter().await;
        assert!(first.is_some(), "the first caller probes");
        let second = tokio::spawn({
            let gate = gate.clone();
            async move { gate.enter().await.is_none() }
        });
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "others wait while the probe is out");
        gate.open();
        drop(first);
        assert!(second.await.unwrap(), "once open, nobody needs a permit");
        assert!(gate.enter().await.is_none());
    }

    #[tokio::test]
    async fn a_probe_without_a_definitive_answer_passes_the_turn() {
        let gate = ProbeGate::default();
        drop(gate.enter().await);
        assert!(gate.enter().await.is_some(), "the next caller probes again");
        assert!(!gate.is_open());
    }
}
