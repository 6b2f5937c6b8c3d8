//! The simulated `get_key_values` and `group_get_key_values` service, as
//! strict as the real one: POST
//! only, every query parameter checked, the UserSig verified (wrong signature
//! → 70003, expired → 70001), pages of at most 200 cut inside runs of equal
//! Seq, 23004 for unknown messages (10010 for unknown groups), 10004 for bad
//! bodies, and faults, both
//! random (seeded per call, so reproducible) and scripted per message.
//! Served by `msgext mock`, used by `msgext demo` and by the tests.

pub mod callbacks;
pub mod history;
pub mod store;

use crate::api::sign::{self, SigClaims, SigError};
use crate::api::wire::GetKeyValuesResponse;
use crate::codes;
use crate::kind::{Kind, MessageId};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{SplitMix64, Store, StoreIndex};

/// The SDKAppID and secret key the demo and `msgext mock` use by default.
pub const DEMO_SDKAPPID: u64 = 1_400_000_000;
pub const DEMO_SECRET_KEY: &str = "msgext-demo-secret-key-not-for-production";

/// Random faults, drawn independently for every call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Share of calls answered `ErrorCode 10002`.
    pub p_10002: f64,
    /// Share of calls answered HTTP 502 by the "gateway".
    pub p_5xx: f64,
    /// Share of calls whose connection is closed without an answer.
    pub p_drop: f64,
    /// Share of calls answered after `slow_ms` more.
    pub p_slow: f64,
    pub slow_ms: u64,
    /// Added to every call.
    pub latency_ms: u64,
    /// Calls per second above which the quota code is answered.
    pub quota: Option<u32>,
    /// Answer calls over the quota with HTTP 429 (a gateway's way) instead of 60007.
    pub quota_429: bool,
    /// Answer every call with this HTML page, `{url}` replaced by the request
    /// path and query (a proxy that echoes the URL, UserSig included).
    pub proxy_page: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub sdkappid: u64,
    pub secret_key: String,
    /// Identifiers accepted as App admins.
    pub admins: Vec<String>,
    pub faults: Faults,
    pub seed: u64,
    pub page_size: usize,
    /// How the history APIs page (the service's limits by default).
    pub paging: history::HistoryPaging,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            sdkappid: DEMO_SDKAPPID,
            secret_key: DEMO_SECRET_KEY.to_owned(),
            admins: vec!["administrator".to_owned()],
            faults: Faults::default(),
            seed: 1,
            page_size: crate::api::PAGE_SIZE,
            paging: history::HistoryPaging::default(),
        }
    }
}

/// What the simulator saw: calls, answers by label, calls per stored message.
#[derive(Debug, Default)]
pub struct MockStats {
    calls: AtomicU64,
    answered_total: tokio::sync::watch::Sender<u64>,
    answers: Mutex<BTreeMap<String, u64>>,
    per_message: Vec<AtomicU32>,
}

impl MockStats {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// How many calls got this answer: `"ok"`, an API code such as `"10002"`,
    /// `"http_502"` or `"drop"`.
    pub fn answered(&self, label: &str) -> u64 {
        self.answers().get(label).copied().unwrap_or(0)
    }

    pub fn answers(&self) -> BTreeMap<String, u64> {
        self.answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls that reached stored message `i` (after auth).
    pub fn calls_for(&self, i: usize) -> u32 {
        self.per_message
            .get(i)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    fn count(&self, label: &str) {
        let mut a = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        *a.entry(label.to_owned()).or_default() += 1;
        drop(a);
        self.answered_total.send_modify(|n| *n += 1);
    }

    /// Wait until at least `n` calls have been answered (for tests that act mid-run).
    pub async fn wait_for_answers(&self, n: u64) {
        let mut rx = self.answered_total.subscribe();
        let _ = rx.wait_for(|&got| got >= n).await;
    }
}

/// What the handler decided to do with one call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Json(GetKeyValuesResponse),
    /// A history API's answer with this ErrorCode, rendered.
    Body(i64, Bytes),
    /// A page of stored message `.0` from StartSeq `.1`, rendered once and cached.
    Page(usize, Option<i64>),
    Status(StatusCode),
    /// A status with `Retry-After: .1` seconds.
    StatusAfter(StatusCode, u64),
    /// A body as it is (a proxy's page, a huge answer): (status, content type, body).
    Raw(StatusCode, &'static str, Bytes),
    Drop,
}

/// A rendered page: (stored message, StartSeq, ActionStatus left out).
type PageKey = (usize, Option<i64>, bool);

pub(crate) struct State {
    store: Store,
    index: StoreIndex,
    config: MockConfig,
    stats: Arc<MockStats>,
    verified: Mutex<HashMap<String, SigClaims>>,
    pages: std::sync::RwLock<HashMap<PageKey, Bytes>>,
    started: Instant,
    window: Mutex<(u64, u32)>,
    /// The group list's own second: (second, calls in it).
    list_window: Mutex<(u64, u32)>,
    /// History calls per group (a group may be dismissed after some).
    group_calls: Mutex<HashMap<String, u32>>,
}

/// A running simulator.
pub struct MockServer {
    addr: SocketAddr,
    stats: Arc<MockStats>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Bind `addr` (use port 0 for a free port) and serve until dropped or stopped.
    pub async fn start(
        store: Store,
        config: MockConfig,
        addr: SocketAddr,
    ) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(MockStats {
            per_message: (0..store.messages.len())
                .map(|_| AtomicU32::new(0))
                .collect(),
            ..MockStats::default()
        });
        let state = Arc::new(State {
            index: store.index(),
            store,
            config,
            stats: stats.clone(),
            verified: Mutex::new(HashMap::new()),
            pages: std::sync::RwLock::new(HashMap::new()),
            started: Instant::now(),
            window: Mutex::new((0, 0)),
            list_window: Mutex::new((0, 0)),
            group_calls: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(MockServer { addr, stats, task })
    }

    /// The base URL to give msgext as `--endpoint`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> &MockStats {
        &self.stats
    }

    /// Run until the task is aborted (for `msgext mock`).
    pub(crate) async fn serve_forever(self) {
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let call_no = state.stats.calls.fetch_add(1, Ordering::Relaxed);
    let faults = &state.config.faults;
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let mut rng = SplitMix64::new(state.config.seed ^ call_no.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let (drop_it, gateway, slow) = (
        rng.unit() < faults.p_drop,
        rng.unit() < faults.p_5xx,
        rng.unit() < faults.p_slow,
    );
    let internal = rng.unit() < faults.p_10002;
    if slow {
        tokio::time::sleep(Duration::from_millis(faults.slow_ms)).await;
    }
    // Where a scripted redirect (`http_307`, …) sends the client: the same
    // URL, so that a client that followed it would get the next answer.
    let location = req.uri().to_string();
    let reply = if drop_it {
        Reply::Drop
    } else if gateway {
        Reply::Status(StatusCode::BAD_GATEWAY)
    } else {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Err(Dropped),
        };
        if let Some(page) = &state.config.faults.proxy_page {
            // A gateway in front of the API that answers with its own page
            // and echoes the request URL (credentials included) back.
            let url = format!("{}?{}", parts.uri.path(), parts.uri.query().unwrap_or(""));
            let html = page.replace("{url}", &url);
            state.stats.count("proxy");
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from(html)))
                .unwrap_or_default());
        }
        let now = chrono::Utc::now().timestamp();
        answer(
            &state,
            &parts.method,
            parts.uri.path(),
            parts.uri.query(),
            &body,
            now,
            internal,
        )
    };
    state.stats.count(&label(&reply));
    respond(&state, reply, call_no, &location)
}

/// What the statistics call an answer: `ok`, its code, `http_<status>`, `drop`.
fn label(reply: &Reply) -> String {
    match reply {
        Reply::Page(..) => "ok".to_owned(),
        Reply::Json(r) if r.error_code == 0 => "ok".to_owned(),
        Reply::Json(r) => r.error_code.to_string(),
        Reply::Body(0, _) => "ok".to_owned(),
        Reply::Body(code, _) => code.to_string(),
        Reply::Status(s) | Reply::StatusAfter(s, _) | Reply::Raw(s, ..) => {
            format!("http_{}", s.as_u16())
        }
        Reply::Drop => "drop".to_owned(),
    }
}

/// The HTTP answer of a reply (`location`: where a redirect sends the client).
fn respond(
    state: &State,
    reply: Reply,
    call_no: u64,
    location: &str,
) -> Result<Response<Full<Bytes>>, Dropped> {
    match reply {
        Reply::Drop => Err(Dropped),
        Reply::Status(s) | Reply::StatusAfter(s, _) => {
            let mut r = Response::builder()
                .status(s)
                .header("content-type", "text/html");
            if s.is_redirection() {
                r = r.header("location", location);
            }
            if let Reply::StatusAfter(_, secs) = reply {
                r = r.header("retry-after", secs.to_string());
            } else if s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::SERVICE_UNAVAILABLE {
                r = r.header("retry-after", "1");
            }
            let body = format!("<html><body>{s}</body></html>");
            Ok(r.body(Full::new(Bytes::from(body))).unwrap_or_default())
        }
        Reply::Raw(s, content_type, body) => Ok(Response::builder()
            .status(s)
            .header("content-type", content_type)
            .body(Full::new(body))
            .unwrap_or_default()),
        Reply::Body(_, body) => Ok(json_response(body)),
        Reply::Json(r) => Ok(json_response(Bytes::from(
            serde_json::to_vec(&r).unwrap_or_default(),
        ))),
        Reply::Page(i, start_seq) => {
            // The real service sometimes leaves ActionStatus out: so do we.
            let bare = call_no % 5 == 4;
            Ok(json_response(state.rendered_page(i, start_seq, bare)))
        }
    }
}

fn json_response(body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap_or_default()
}

impl State {
    /// The JSON of a page, rendered once: so that the simulator is not what
    /// limits a benchmark of the client.
    fn rendered_page(&self, i: usize, start_seq: Option<i64>, bare: bool) -> Bytes {
        let key = (i, start_seq, bare);
        if let Some(b) = self
            .pages
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return b.clone();
        }
        let mut r =
            self.store.messages[i].page_with(start_seq, self.config.page_size, self.store.deletes);
        if bare {
            r.action_status = None;
        }
        let body = Bytes::from(serde_json::to_vec(&r).unwrap_or_default());
        self.pages
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, body.clone());
        body
    }
}

fn fail(code: i64, info: impl Into<String>) -> Reply {
    Reply::Json(GetKeyValuesResponse::error(code, info))
}

/// Everything after transport faults: URL, query, UserSig, quota, body, data.
fn answer(
    state: &State,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    now: i64,
    internal: bool,
) -> Reply {
    // The extension call of a kind, or a history API; any other path is 404.
    let api = match (
        Kind::from_api_path(path),
        history::HistoryApi::from_path(path),
    ) {
        (Some(kind), _) => Ok(kind),
        (None, Some(h)) => Err(h),
        (None, None) => return Reply::Status(StatusCode::NOT_FOUND),
    };
    if method != Method::POST {
        return fail(codes::BAD_URL, "only POST is supported");
    }
    if let Some(reply) = query_refused(state, query, now) {
        return reply;
    }
    if over_quota(state) {
        if state.config.faults.quota_429 {
            return Reply::Status(StatusCode::TOO_MANY_REQUESTS);
        }
        return fail(codes::FREQ_LIMIT, "API call frequency over the limit");
    }
    let kind = match api {
        Ok(kind) => kind,
        Err(h) if internal => return h.fail(h.internal_code(), "internal server error, try again"),
        Err(h) => return history::answer(state, h, body, now),
    };
    let (id, start_seq) = match parse_body(kind, body) {
        Ok(r) => r,
        Err(e) => return fail(codes::INVALID_PARAM, e.to_string()),
    };
    if internal {
        return fail(codes::INTERNAL, "internal server error, try again");
    }
    let i = match state.index.lookup(&id) {
        Ok(i) => i,
        Err((code, text)) => return fail(code, text),
    };
    let n = state.stats.per_message[i].fetch_add(1, Ordering::Relaxed) as usize;
    let m = &state.store.messages[i];
    if let Some(r) = m
        .script
        .get(n)
        .or(m.always.as_ref())
        .and_then(|s| scripted(s, m))
    {
        return r;
    }
    Reply::Page(i, start_seq)
}

/// Why the query of a call is refused, if it is: every parameter must be
/// there and well-formed, the SDKAppID this simulator's, the UserSig
/// valid, the identifier an admin.
fn query_refused(state: &State, query: Option<&str>, now: i64) -> Option<Reply> {
    let params: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    for name in ["sdkappid", "identifier", "usersig", "random", "contenttype"] {
        if !params.contains_key(name) {
            return Some(fail(
                codes::BAD_URL,
                format!("missing URL parameter {name}"),
            ));
        }
    }
    if params["contenttype"] != "json" {
        return Some(fail(codes::BAD_URL, "contenttype must be json"));
    }
    if params["random"].parse::<u32>().is_err() {
        return Some(fail(
            codes::BAD_URL,
            "random must be a 32-bit unsigned integer",
        ));
    }
    let Ok(sdkappid) = params["sdkappid"].parse::<u64>() else {
        return Some(fail(codes::BAD_URL, "sdkappid must be a number"));
    };
    if sdkappid != state.config.sdkappid {
        return Some(fail(
            codes::SDKAPPID_NOT_FOUND,
            format!("SDKAppID {sdkappid} not found in this data center"),
        ));
    }
    let identifier = &params["identifier"];
    if let Err((code, info)) = check_sig(state, &params["usersig"], identifier, sdkappid, now) {
        return Some(fail(code, info));
    }
    if !state.config.admins.iter().any(|a| a == identifier) {
        return Some(fail(
            codes::ADMIN_REQUIRED,
            format!("{identifier} is not an App admin"),
        ));
    }
    None
}

/// A scripted answer: `"http_503"`, `"http_503:3600"` (with that
/// Retry-After; a 3xx status redirects to the same URL), `"drop"`, an API code, `"ok"` (none), or an OK answer that
/// cannot be the whole truth: `"bad:no_list"`, `"bad:no_latest"`,
/// `"bad:fail0"` (ActionStatus FAIL with ErrorCode 0),
/// `"bad:empty_incomplete"` (no pairs, CompleteFlag 0), `"huge"` (a valid
/// answer padded past 16 MiB).
fn scripted(s: &str, m: &store::StoredMessage) -> Option<Reply> {
    if s == "drop" {
        return Some(Reply::Drop);
    }
    if let Some(status) = s.strip_prefix("http_") {
        let (status, after) = match status.split_once(':') {
            Some((st, a)) => (st, Some(a.parse::<u64>().ok()?)),
            None => (status, None),
        };
        let code = StatusCode::from_u16(status.parse::<u16>().ok()?).ok()?;
        return Some(match after {
            Some(secs) => Reply::StatusAfter(code, secs),
            None => Reply::Status(code),
        });
    }
    let ok = || m.page(None, crate::api::PAGE_SIZE);
    let bad = |f: &dyn Fn(&mut GetKeyValuesResponse)| {
        let mut r = ok();
        f(&mut r);
        Some(Reply::Json(r))
    };
    match s {
        "bad:no_list" => return bad(&|r| r.extension_list = None),
        "bad:no_latest" => return bad(&|r| r.latest_seq = None),
        "bad:fail0" => return bad(&|r| r.action_status = Some("FAIL".into())),
        "bad:empty_incomplete" => {
            return bad(&|r| {
                r.extension_list = Some(Default::default());
                r.complete_flag = Some(0);
            });
        }
        "huge" => {
            let mut r = ok();
            r.error_info = "x".repeat(17 << 20);
            return Some(Reply::Raw(
                StatusCode::OK,
                "application/json",
                Bytes::from(serde_json::to_vec(&r).unwrap_or_default()),
            ));
        }
        _ => {}
    }
    match s.parse::<i64>() {
        Ok(0) | Err(_) => None,
        Ok(code) => Some(fail(code, format!("scripted error {code}"))),
    }
}

fn refusal(code: i64, info: impl Into<String>) -> (i64, String) {
    (code, info.into())
}

/// Verify the UserSig (cached once verified); `Err` holds the code and info to answer.
fn check_sig(
    state: &State,
    usersig: &str,
    identifier: &str,
    sdkappid: u64,
    now: i64,
) -> Result<(), (i64, String)> {
    let cached = state
        .verified
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(usersig)
        .cloned();
    let claims = match cached {
        Some(c) if c.expires_at() >= now => c,
        _ => {
            let c = sign::verify(usersig, &state.config.secret_key, now).map_err(|e| match e {
                SigError::Empty => refusal(codes::SIG_EMPTY, "UserSig is empty"),
                SigError::Expired(_) => refusal(codes::SIG_EXPIRED, "UserSig expired"),
                SigError::BadSignature | SigError::Malformed(_) => refusal(
                    codes::SIG_INVALID,
                    format!("UserSig verification failed: {e}"),
                ),
            })?;
            let mut v = state.verified.lock().unwrap_or_else(|p| p.into_inner());
            if v.len() > 10_000 {
                v.clear();
            }
            v.insert(usersig.to_owned(), c.clone());
            c
        }
    };
    if claims.sdkappid != sdkappid {
        return Err(refusal(
            codes::SIG_SDKAPPID_MISMATCH,
            "UserSig was made for another SDKAppID",
        ));
    }
    if claims.identifier != identifier {
        return Err(refusal(
            codes::SIG_IDENTIFIER_MISMATCH,
            "UserSig was made for another identifier",
        ));
    }
    Ok(())
}

impl State {
    /// A call of the group list beyond its 1 a second.
    fn over_group_list_quota(&self) -> bool {
        let second = self.started.elapsed().as_secs();
        let mut w = self.list_window.lock().unwrap_or_else(|p| p.into_inner());
        if w.0 != second {
            *w = (second, 0);
        }
        w.1 += 1;
        w.1 > crate::api::history::GROUP_LIST_RATE
    }

    /// Count a history call for a group; the calls before this one.
    fn history_call(&self, group_id: &str) -> u32 {
        let mut calls = self.group_calls.lock().unwrap_or_else(|p| p.into_inner());
        let n = calls.entry(group_id.to_owned()).or_default();
        *n += 1;
        *n - 1
    }
}

fn over_quota(state: &State) -> bool {
    let Some(limit) = state.config.faults.quota else {
        return false;
    };
    let second = state.started.elapsed().as_secs();
    let mut w = state.window.lock().unwrap_or_else(|p| p.into_inner());
    if w.0 != second {
        *w = (second, 0);
    }
    w.1 += 1;
    w.1 > limit
}

/// Why the simulator refuses a request body, as the service words it.
#[derive(Debug, thiserror::Error)]
enum BadBody {
    #[error("request body is empty")]
    Empty,
    #[error("body is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("body is not a JSON object")]
    NotObject,
    #[error("StartSeq must be a non-negative integer")]
    StartSeq,
    #[error(transparent)]
    Id(#[from] crate::kind::BadId),
}

/// The message a body names (read by its kind, as strictly as the service
/// reads it) and its optional StartSeq.
fn parse_body(kind: Kind, body: &[u8]) -> Result<(MessageId, Option<i64>), BadBody> {
    if body.is_empty() {
        return Err(BadBody::Empty);
    }
    let serde_json::Value::Object(obj) = serde_json::from_slice(body)? else {
        return Err(BadBody::NotObject);
    };
    let start_seq = match obj.get("StartSeq") {
        None => None,
        Some(s) => Some(s.as_i64().filter(|s| *s >= 0).ok_or(BadBody::StartSeq)?),
    };
    Ok((kind.spec().parse_request(&obj)?, start_seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_refused_before_the_kind_reads_them() {
        let one = Kind::OneToOne;
        let group = Kind::Group;
        type Want = Result<Option<i64>, &'static str>;
        let table: [(Kind, &[u8], Want); 8] = [
            (one, br#"{"To_Account":"b","MsgKey":"k"}"#, Ok(None)),
            (
                one,
                br#"{"To_Account":"b","MsgKey":"k","StartSeq":3}"#,
                Ok(Some(3)),
            ),
            (
                group,
                br#"{"GroupId":"g","MsgSeq":1,"StartSeq":0}"#,
                Ok(Some(0)),
            ),
            (one, b"", Err("request body is empty")),
            (one, b"not json", Err("body is not JSON")),
            (group, b"[1]", Err("body is not a JSON object")),
            (
                one,
                br#"{"To_Account":"b","MsgKey":"k","StartSeq":"x"}"#,
                Err("StartSeq must be"),
            ),
            (
                group,
                br#"{"GroupId":"g","MsgSeq":1,"StartSeq":-1}"#,
                Err("StartSeq must be"),
            ),
        ];
        for (kind, body, want) in table {
            let got = parse_body(kind, body).map(|(_, start)| start);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.to_string().starts_with(want), "{got}"),
                (got, want) => panic!("{}: {got:?} vs {want:?}", String::from_utf8_lossy(body)),
            }
        }
        assert!(
            parse_body(group, br#"{"To_Account":"b","MsgKey":"k"}"#).is_err(),
            "the kind reads the rest"
        );
    }

    #[test]
    fn scripted_answers() {
        let m = store::StoredMessage::new(crate::kind::MessageRef::new(None, "b", "k"), 0, vec![]);
        assert_eq!(scripted("drop", &m), Some(Reply::Drop));
        assert_eq!(
            scripted("http_503", &m),
            Some(Reply::Status(StatusCode::SERVICE_UNAVAILABLE))
        );
        assert_eq!(
            scripted("http_429:3600", &m),
            Some(Reply::StatusAfter(StatusCode::TOO_MANY_REQUESTS, 3600))
        );
        assert!(matches!(scripted("10002", &m), Some(Reply::Json(r)) if r.error_code == 10002));
        assert!(
            matches!(scripted("bad:no_list", &m), Some(Reply::Json(r)) if r.error_code == 0 && r.extension_list.is_none())
        );
        assert_eq!(scripted("ok", &m), None);
    }
}
