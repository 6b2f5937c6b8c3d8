//! One `get_key_values` call over HTTP, on reqwest: the URL, the query
//! (with a fresh `random` on every attempt), the JSON body, and decoding the
//! answer. Also the credentials that supply a UserSig per call and renew it
//! before expiry. Nothing here retries or sleeps: `fetch` decides what to do
//! with the result.
//!
//! The client follows no redirect (the UserSig travels in the query: a 3xx
//! is a misconfigured endpoint, and `fetch::explain_fatal` says so), caps
//! the answer's body, and ends every call, body included, within its
//! timeout. Proxies are reqwest's: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`
//! and `NO_PROXY` (`http://`, `https://` and `socks5://` proxies, with
//! `user:password@`); certificates are checked against the system's roots.

use super::sign;
use bytes::Bytes;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The client's own timeout per call: longer than the backend's 3 s.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong below the API level: the call got no usable `ErrorCode`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("timed out")]
    Timeout,
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection failed: {0}")]
    Network(String),
    #[error("HTTP status {status}")]
    Http {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("unparseable response: {0}")]
    Decode(String),
}

impl CallError {
    /// The short code used in errors.csv and the messages table.
    pub(crate) fn code(&self) -> String {
        match self {
            CallError::Timeout => "timeout".into(),
            CallError::Connect(_) | CallError::Network(_) => "network".into(),
            CallError::Http { status, .. } => format!("http_{status}"),
            CallError::Decode(_) => "bad_response".into(),
        }
    }
}

/// Why no client could be set up; every field is shown without a password
/// or query (`without_password`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("invalid endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("invalid proxy {proxy}: {reason}")]
    Proxy { proxy: String, reason: String },
    #[error("cannot set up the API client: {0}")]
    Client(String),
}

/// Where the UserSig of each call comes from.
pub(crate) enum Credentials {
    /// msgext signs with the secret key and renews before expiry.
    Secret(SecretSigner),
    /// A ready UserSig from `MSGEXT_USERSIG`; cannot be renewed.
    Ready(Arc<str>),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Secret(s) => write!(
                f,
                "Credentials::Secret(sdkappid={}, identifier={}, key=<redacted>)",
                s.sdkappid, s.identifier
            ),
            Credentials::Ready(_) => f.write_str("Credentials::Ready(<redacted>)"),
        }
    }
}

/// Signs UserSigs with the secret key, caching one until half its validity is gone.
pub(crate) struct SecretSigner {
    key: String,
    sdkappid: u64,
    identifier: String,
    expire: i64,
    cached: Mutex<Option<(Arc<str>, i64)>>,
}

impl Credentials {
    pub(crate) fn from_secret(key: String, sdkappid: u64, identifier: &str, expire: i64) -> Self {
        Credentials::Secret(SecretSigner {
            key,
            sdkappid,
            identifier: identifier.to_owned(),
            expire: expire.max(2),
            cached: Mutex::new(None),
        })
    }

    pub(crate) fn ready(sig: &str) -> Self {
        Credentials::Ready(Arc::from(sig))
    }

    pub(crate) fn can_renew(&self) -> bool {
        matches!(self, Credentials::Secret(_))
    }

    /// The UserSig to send at `now` (Unix seconds); a new one is made once half
    /// of the current one's validity has passed.
    pub(crate) fn usersig(&self, now: i64) -> Arc<str> {
        match self {
            Credentials::Ready(s) => s.clone(),
            Credentials::Secret(s) => {
                let mut cached = s.cached.lock().unwrap_or_else(|p| p.into_inner());
                match &*cached {
                    Some((sig, renew_at)) if now < *renew_at => sig.clone(),
                    _ => {
                        let sig: Arc<str> = Arc::from(sign::user_sig(
                            &s.key,
                            s.sdkappid,
                            &s.identifier,
                            now,
                            s.expire,
                        ));
                        *cached = Some((sig.clone(), now + s.expire / 2));
                        sig
                    }
                }
            }
        }
    }

    /// Forget the cached UserSig so that the next call signs anew (after 70001).
    pub(crate) fn renew(&self) {
        if let Credentials::Secret(s) = self {
            *s.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

/// The UserSig a call URL was made for, and that URL up to `random=`.
type SignedUrl = Option<(Arc<str>, Arc<str>)>;

/// The proxies the calls go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxies {
    /// Those the environment names, as reqwest (and curl) read them.
    Environment,
    /// This proxy for every call (`http://`, `https://`, `socks5h://…`).
    All(String),
}

/// One pooled HTTP client bound to an endpoint, an SDKAppID and an admin identifier.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// Said before the cause of a failed connection when calls go through a
    /// proxy: the run's error then names the proxy, not only the endpoint.
    via: Option<Arc<str>>,
    /// The call's URL up to `random=`, for the UserSig it was made for: a
    /// call copies it and appends a number, instead of encoding the UserSig
    /// and the query again.
    signed: Arc<Mutex<SignedUrl>>,
    /// The endpoint's URL with the path, checked once.
    url: Arc<str>,
    sdkappid: Arc<str>,
    identifier: Arc<str>,
    /// The whole call, from connecting to the body's last byte (`call`).
    timeout: Duration,
}

const USER_AGENT: &str = concat!("msgext/", env!("CARGO_PKG_VERSION"));

/// The longest a connection (to the endpoint or a proxy) may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl ApiClient {
    /// `base` is `https://{domain}` or an `--endpoint` such as
    /// `http://127.0.0.1:PORT`; `path` is the API's (`KindSpec::api_path`).
    /// The error names the setting to fix, the endpoint and the proxy
    /// without a password or query: reqwest's own error would quote them whole.
    pub fn new(
        base: &str,
        path: &str,
        sdkappid: u64,
        identifier: &str,
        timeout: Duration,
        proxies: &Proxies,
    ) -> Result<Self, SetupError> {
        let invalid = |reason: String| SetupError::Endpoint {
            endpoint: without_password(base),
            reason,
        };
        let mut url = reqwest::Url::parse(&super::call_url(base, path))
            .map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("give an http:// or https:// URL".into()));
        }
        url.set_query(None);
        url.set_fragment(None);
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .pool_idle_timeout(Duration::from_secs(60));
        let via = match proxies {
            Proxies::Environment => proxy_from_env(&url),
            Proxies::All(proxy) => {
                let p = reqwest::Proxy::all(proxy.as_str()).map_err(|e| SetupError::Proxy {
                    proxy: without_password(proxy),
                    reason: root_cause(&e),
                })?;
                builder = builder.proxy(p);
                Some(without_password(proxy))
            }
        };
        let http = builder
            .build()
            .map_err(|e| SetupError::Client(root_cause(&e)))?;
        Ok(ApiClient {
            http,
            via: via.map(|p| Arc::from(format!("through the proxy {p}: "))),
            signed: Arc::default(),
            url: Arc::from(url.as_str()),
            sdkappid: Arc::from(sdkappid.to_string()),
            identifier: Arc::from(identifier),
            timeout,
        })
    }

    /// The URL of a call signed with `usersig`, `random` included.
    fn call_url(&self, usersig: &str) -> String {
        let prefix = {
            let mut signed = self.signed.lock().unwrap_or_else(|p| p.into_inner());
            match &*signed {
                Some((sig, prefix)) if **sig == *usersig => prefix.clone(),
                _ => {
                    let mut query = form_urlencoded::Serializer::new(String::new());
                    query
                        .append_pair("sdkappid", &self.sdkappid)
                        .append_pair("identifier", &self.identifier)
                        .append_pair("usersig", usersig)
                        .append_pair("contenttype", "json");
                    let prefix: Arc<str> =
                        Arc::from(format!("{}?{}&random=", self.url, query.finish()));
                    *signed = Some((Arc::from(usersig), prefix.clone()));
                    prefix
                }
            }
        };
        format!("{prefix}{}", rand::random::<u32>())
    }

    /// One POST of a JSON `body` (`MessageId::request_body`, or a history
    /// API's request). `Ok` means a decodable answer, whatever its
    /// `ErrorCode`. The whole call, body included, ends within the client's
    /// timeout.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        usersig: &str,
        body: Bytes,
    ) -> Result<T, CallError> {
        let request = self
            .http
            .post(self.call_url(usersig))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let bytes = tokio::time::timeout(self.timeout, self.exchange(request))
            .await
            .map_err(|_| CallError::Timeout)??;
        serde_json::from_slice(&bytes).map_err(|e| {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
            CallError::Decode(format!("{e}; body starts {head:?}"))
        })
    }

    /// One `get_key_values` (or `group_get_key_values`) call.
    pub async fn call(
        &self,
        usersig: &str,
        body: Bytes,
    ) -> Result<super::wire::GetKeyValuesResponse, CallError> {
        self.post(usersig, body).await
    }

    /// Send, check the status, read the body.
    async fn exchange(&self, request: reqwest::RequestBuilder) -> Result<Bytes, CallError> {
        let resp = request.send().await.map_err(|e| self.failed(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(CallError::Http {
                status: status.as_u16(),
                retry_after,
            });
        }
        read_capped(resp, MAX_ANSWER_BYTES, |e| self.failed(&e)).await
    }

    /// A failed request as a call error: a timeout, a connection that could
    /// not be made (naming the proxy it went through), or one that broke.
    fn failed(&self, e: &reqwest::Error) -> CallError {
        if e.is_timeout() {
            CallError::Timeout
        } else if e.is_connect() {
            let via = self.via.as_deref().unwrap_or("");
            CallError::Connect(format!("{via}{}", root_cause(e)))
        } else {
            CallError::Network(root_cause(e))
        }
    }
}

/// The proxy the environment names for `url`, as reqwest reads it (the
/// same rules: `HTTPS_PROXY` / `HTTP_PROXY` by scheme, `ALL_PROXY`,
/// `NO_PROXY`), shown without its password.
fn proxy_from_env(url: &reqwest::Url) -> Option<String> {
    let uri: hyper::Uri = url.as_str().parse().ok()?;
    let matcher = hyper_util::client::proxy::matcher::Matcher::from_system();
    proxy_for(&matcher, &uri)
}

/// The proxy `matcher` gives for `uri`, shown without its password.
fn proxy_for(
    matcher: &hyper_util::client::proxy::matcher::Matcher,
    uri: &hyper::Uri,
) -> Option<String> {
    matcher
        .intercept(uri)
        .map(|i| without_password(&i.uri().to_string()))
}

/// A URL (a proxy, an endpoint) as it may be shown: scheme, host and port,
/// never a password or a query. One that does not parse is shown whole only
/// when it holds nothing that could be a credential (`@`, `?`, `#`).
fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) if !url.contains(['@', '?', '#']) => format!("{url:?}"),
        Err(_) => "(a URL that does not parse)".to_owned(),
    }
}

/// The largest answer body read: 200 pairs of at most 100 + 1000 bytes,
/// JSON-escaped, fit many times over; a bigger one is a bad response, not a
/// reason to grow the resident set.
pub(crate) const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The body, or a bad response once it passes `cap` bytes (checked against
/// Content-Length first, then as it arrives).
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    failed: impl Fn(reqwest::Error) -> CallError,
) -> Result<Bytes, CallError> {
    let too_big = || CallError::Decode(format!("answer larger than {} MiB", cap >> 20));
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_big());
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while let Some(chunk) = resp.chunk().await.map_err(&failed)? {
        len += chunk.len();
        if len > cap {
            return Err(too_big());
        }
        chunks.push(chunk);
    }
    // One piece (the usual answer) comes out without a copy.
    Ok(match chunks.len() {
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each call's URL carries the five parameters, the UserSig exactly as
    /// given (characters a query must escape included), a `random` of its
    /// own, and the UserSig of that call even when it changes between calls.
    #[test]
    fn a_call_url_carries_its_own_usersig_and_random() {
        let c = ApiClient::new(
            "http://127.0.0.1:9/",
            "/v4/openim_msg_ext_http_svc/get_key_values",
            1400000000,
            "admin istrator",
            Duration::from_secs(1),
            &Proxies::Environment,
        )
        .unwrap();
        let params = |u: &reqwest::Url| -> Vec<(String, String)> {
            let mut p: Vec<(String, String)> = u.query_pairs().into_owned().collect();
            p.sort();
            p
        };
        let mut randoms = std::collections::HashSet::new();
        for sig in ["eJw+/a=b&c%d", "eJw+/a=b&c%d", "second-sig", "eJw+/a=b&c%d"] {
            let text = c.call_url(sig);
            assert!(hyper::Uri::try_from(text.as_str()).is_ok(), "{text}");
            // Read back by another parser than the one that wrote it.
            let u = reqwest::Url::parse(&text).unwrap();
            assert_eq!(u.host_str(), Some("127.0.0.1"));
            assert_eq!(u.path(), "/v4/openim_msg_ext_http_svc/get_key_values");
            let p = params(&u);
            let names: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(
                names,
                ["contenttype", "identifier", "random", "sdkappid", "usersig"],
                "{u}"
            );
            let get = |k: &str| p.iter().find(|(n, _)| n == k).unwrap().1.clone();
            assert_eq!(get("usersig"), sig);
            assert_eq!(get("identifier"), "admin istrator");
            assert_eq!(get("sdkappid"), "1400000000");
            assert_eq!(get("contenttype"), "json");
            randoms.insert(get("random").parse::<u32>().unwrap());
        }
        assert!(randoms.len() >= 3, "a random a call: {randoms:?}");
    }

    /// A proxy on 127.0.0.1:0 that takes one connection, hands back the
    /// request head it read, and answers `reply`.
    async fn one_shot_proxy(reply: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            conn.write_all(reply.as_bytes()).await.unwrap();
            conn.shutdown().await.unwrap();
            String::from_utf8(head).unwrap()
        });
        (port, task)
    }

    /// What the proxy read; a failure, not a hang, when nothing came to it.
    async fn heard(proxy: tokio::task::JoinHandle<String>) -> String {
        tokio::time::timeout(Duration::from_secs(10), proxy)
            .await
            .expect("the call never reached the proxy")
            .unwrap()
    }

    fn proxied_client(endpoint: &str, proxy: String) -> ApiClient {
        ApiClient::new(
            endpoint,
            "/v4/openim_msg_ext_http_svc/get_key_values",
            1400000000,
            "administrator",
            Duration::from_secs(5),
            &Proxies::All(proxy),
        )
        .unwrap()
    }

    /// An http endpoint behind HTTP_PROXY: the request goes to the proxy with
    /// the endpoint's full URL and the proxy's credentials, and the proxy's
    /// answer is the call's. The endpoint's host is never looked up.
    #[tokio::test]
    async fn an_http_endpoint_is_called_through_the_http_proxy() {
        let body = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","CompleteFlag":1,"LatestSeq":3,"ClearSeq":0,"ExtensionList":[]}"#;
        let reply: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (port, proxy) = one_shot_proxy(reply).await;
        let c = proxied_client(
            "http://api.invalid:8080",
            format!("http://me:s3cret@127.0.0.1:{port}"),
        );
        let answer = c.call("the-sig", Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(answer.latest_seq, Some(3));
        let head = heard(proxy).await;
        assert!(
            head.starts_with(
                "POST http://api.invalid:8080/v4/openim_msg_ext_http_svc/get_key_values?sdkappid=1400000000&identifier=administrator&usersig=the-sig&contenttype=json&random="
            ),
            "{head}"
        );
        // base64("me:s3cret")
        assert!(
            head.contains("\r\nproxy-authorization: Basic bWU6czNjcmV0\r\n"),
            "{head}"
        );
    }

    /// An https endpoint behind HTTPS_PROXY: a CONNECT to the endpoint's host
    /// and port with the proxy's credentials, then TLS inside the tunnel. The
    /// proxy here closes the tunnel: the call fails at once as a connection
    /// failure (retried, and named in the error report), without the UserSig.
    #[tokio::test]
    async fn an_https_endpoint_is_tunnelled_through_the_https_proxy() {
        let (port, proxy) = one_shot_proxy("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let c = proxied_client(
            "https://api.invalid",
            format!("http://me:s3cret@127.0.0.1:{port}"),
        );
        let err = c
            .call("the-sig", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Connect(_)), "{err:?}");
        assert!(!err.to_string().contains("the-sig"), "{err}");
        let head = heard(proxy).await;
        assert!(
            head.starts_with("CONNECT api.invalid:443 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("\r\nproxy-authorization: basic bwu6cznjcmv0\r\n"),
            "{head}"
        );
        assert!(
            !head.contains("the-sig"),
            "the UserSig stays inside the tunnel: {head}"
        );
    }

    /// A proxy that refuses the tunnel (407): the call fails at once as a
    /// connection failure that names the proxy (not its password) and what
    /// it said, so that the run's error points at the proxy, not the API.
    #[tokio::test]
    async fn a_proxy_refusing_the_tunnel_is_named_in_the_error() {
        let (port, proxy) =
            one_shot_proxy("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let c = proxied_client(
            "https://api.invalid",
            format!("http://me:s3cret@127.0.0.1:{port}"),
        );
        let err = c
            .call("the-sig", Bytes::from_static(b"{}"))
            .await
            .unwrap_err();
        let CallError::Connect(text) = &err else {
            panic!("a connection failure: {err:?}")
        };
        assert_eq!(
            text,
            &format!(
                "through the proxy http://127.0.0.1:{port}: tunnel error: proxy authorization required"
            )
        );
        assert!(heard(proxy).await.starts_with("CONNECT api.invalid:443 "));
    }

    /// The proxy named in errors is the one reqwest uses: by the endpoint's
    /// scheme, `NO_PROXY` honoured, shown without its password.
    #[test]
    fn the_proxy_named_follows_the_environment_s_rules() {
        use hyper_util::client::proxy::matcher::Matcher;
        let rules = |http: &str, https: &str, no: &str| {
            Matcher::builder().http(http).https(https).no(no).build()
        };
        let api: hyper::Uri = "https://adminapisgp.im.qcloud.com/v4/x".parse().unwrap();
        let local: hyper::Uri = "http://127.0.0.1:8080/v4/x".parse().unwrap();
        let p = "http://proxy.corp:3128";
        let table = [
            (&api, rules("", "", ""), None),
            (&api, rules("", p, ""), Some(p)),
            (
                &api,
                rules("", "http://me:s%40cret@proxy.corp:3128", ""),
                Some(p),
            ),
            // HTTPS_PROXY is for https endpoints only.
            (&local, rules("", p, ""), None),
            (
                &local,
                rules("http://me:pw@proxy.corp:3128", "", ""),
                Some(p),
            ),
            (&api, rules("", p, "im.qcloud.com"), None),
            (&local, rules(p, "", "127.0.0.1"), None),
            (
                &api,
                rules("", "socks5h://me:pw@proxy.corp:1080", ""),
                Some("socks5h://proxy.corp:1080"),
            ),
            (
                &api,
                rules("", "https://proxy.corp:3129", ""),
                Some("https://proxy.corp:3129"),
            ),
        ];
        for (uri, matcher, want) in table {
            assert_eq!(
                proxy_for(&matcher, uri).as_deref(),
                want,
                "{uri} {matcher:?}"
            );
        }
    }

    /// A SOCKS5 proxy on 127.0.0.1:0 (no authentication) that takes one
    /// CONNECT, hands back the host and port asked for and the request that
    /// came through the tunnel, and answers it with `reply`.
    async fn one_shot_socks5(
        reply: &'static str,
    ) -> (u16, tokio::task::JoinHandle<(String, u16, String)>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut greeting = [0u8; 2];
            c.read_exact(&mut greeting).await.unwrap();
            assert_eq!(greeting[0], 5, "SOCKS version 5");
            let mut methods = vec![0u8; usize::from(greeting[1])];
            c.read_exact(&mut methods).await.unwrap();
            assert!(methods.contains(&0), "no authentication offered");
            c.write_all(&[5, 0]).await.unwrap();
            let mut head = [0u8; 4];
            c.read_exact(&mut head).await.unwrap();
            assert_eq!(&head[..3], &[5, 1, 0], "a CONNECT");
            assert_eq!(head[3], 3, "by domain name: the proxy resolves it");
            let mut len = [0u8; 1];
            c.read_exact(&mut len).await.unwrap();
            let mut host = vec![0u8; usize::from(len[0])];
            c.read_exact(&mut host).await.unwrap();
            let mut port = [0u8; 2];
            c.read_exact(&mut port).await.unwrap();
            c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])
                .await
                .unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") {
                if c.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                request.push(byte[0]);
            }
            c.write_all(reply.as_bytes()).await.unwrap();
            c.shutdown().await.unwrap();
            (
                String::from_utf8(host).unwrap(),
                u16::from_be_bytes(port),
                String::from_utf8(request).unwrap(),
            )
        });
        (port, task)
    }

    /// An endpoint behind a `socks5h://` proxy: the proxy is asked for the
    /// endpoint's host by name (never looked up here), and the call's
    /// answer comes through the tunnel.
    #[tokio::test]
    async fn an_endpoint_is_called_through_a_socks5_proxy() {
        let body = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":"","CompleteFlag":1,"LatestSeq":4,"ClearSeq":0,"ExtensionList":[]}"#;
        let reply: &'static str = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        );
        let (port, proxy) = one_shot_socks5(reply).await;
        let c = proxied_client(
            "http://api.invalid:8080",
            format!("socks5h://127.0.0.1:{port}"),
        );
        let answer = c.call("the-sig", Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(answer.latest_seq, Some(4));
        let (host, port, request) = tokio::time::timeout(Duration::from_secs(10), proxy)
            .await
            .expect("the call never reached the proxy")
            .unwrap();
        assert_eq!((host.as_str(), port), ("api.invalid", 8080));
        assert!(
            request.starts_with("POST /v4/openim_msg_ext_http_svc/get_key_values?sdkappid="),
            "{request}"
        );
    }

    /// An endpoint that takes the connection and never answers: the call
    /// ends at the client's timeout as `Timeout` (retried by `fetch`), and
    /// so does one that sends its head and never the body.
    #[tokio::test]
    async fn a_call_that_gets_no_answer_ends_at_the_timeout() {
        use tokio::io::AsyncWriteExt;
        for head in ["", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let server = tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let (mut conn, _) = listener.accept().await.unwrap();
                // The whole request (head and its 2-byte body), then the answer's start.
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.ends_with(b"\r\n\r\n{}") {
                    let n = conn.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    got.extend_from_slice(&buf[..n]);
                }
                conn.write_all(head.as_bytes()).await.unwrap();
                // Hold the connection open, silent, until the test ends.
                std::future::pending::<()>().await;
                drop(conn);
            });
            let c = ApiClient::new(
                &url,
                "/v4/openim_msg_ext_http_svc/get_key_values",
                1400000000,
                "administrator",
                Duration::from_millis(300),
                &Proxies::Environment,
            )
            .unwrap();
            let err = tokio::time::timeout(
                Duration::from_secs(10),
                c.call("sig", Bytes::from_static(b"{}")),
            )
            .await
            .expect("the call outlived its timeout")
            .unwrap_err();
            assert_eq!(err, CallError::Timeout, "head {head:?}");
            server.abort();
        }
    }

    #[test]
    fn secret_credentials_renew_at_half_life_and_on_demand() {
        let c = Credentials::from_secret("sekrit-key".into(), 1400000000, "administrator", 100);
        let a = c.usersig(1000);
        assert_eq!(c.usersig(1049), a, "reused while young");
        let b = c.usersig(1050);
        assert_ne!(b, a, "renewed at half-life");
        let claims = sign::verify(&b, "sekrit-key", 1050).unwrap();
        assert_eq!(claims.time, 1050);
        c.renew();
        assert_ne!(c.usersig(1051), b, "renew() forces a new one");
        assert!(
            !format!("{c:?}").contains("sekrit"),
            "Debug must not show the key"
        );
    }

    #[test]
    fn ready_credentials_never_change() {
        let c = Credentials::ready("abc");
        assert_eq!(&*c.usersig(0), "abc");
        c.renew();
        assert_eq!(&*c.usersig(1 << 40), "abc");
        assert!(!c.can_renew());
        assert!(!format!("{c:?}").contains("abc"));
    }

    #[test]
    fn call_error_codes() {
        let table = [
            (CallError::Timeout, "timeout"),
            (CallError::Connect("refused".into()), "network"),
            (CallError::Network("reset".into()), "network"),
            (
                CallError::Http {
                    status: 503,
                    retry_after: None,
                },
                "http_503",
            ),
            (CallError::Decode("x".into()), "bad_response"),
        ];
        for (e, code) in table {
            assert_eq!(e.code(), code);
        }
    }

    /// Every level of an error's chain as it could reach a log: `Display`
    /// and `Debug` of the error and of each `source()`.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = Some(e);
        while let Some(e) = cur {
            out.push(format!("{e} / {e:?}"));
            cur = e.source();
        }
        out
    }

    /// A UserSig in the call's query, a proxy's password, credentials or a
    /// query in the endpoint: no error msgext builds from them shows them,
    /// at any level of its chain, as text or as `Debug`.
    #[tokio::test]
    async fn no_error_chain_shows_a_secret() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let path = "/v4/openim_msg_ext_http_svc/get_key_values";
        let new = |base: &str, proxies: &Proxies| {
            ApiClient::new(base, path, 1, "admin", Duration::from_secs(2), proxies)
        };
        let mut errors: Vec<Box<dyn std::error::Error>> = Vec::new();
        for (base, proxies) in [
            ("ftp://u:SECRET@host/", Proxies::Environment),
            ("http://u:SECRET@host:99999/", Proxies::Environment),
            (
                "http://host/?usersig=SECRET",
                Proxies::All("http://u:SECRET@[::1".into()),
            ),
            ("127.0.0.1:1?sig=SECRET", Proxies::Environment),
        ] {
            let Err(e) = new(base, &proxies) else {
                panic!("{base}: taken");
            };
            errors.push(Box::new(crate::export::ExportError::from(e)));
        }
        let refused = new(&format!("http://{closed}"), &Proxies::Environment).unwrap();
        let via_proxy = new(
            "http://api.invalid",
            &Proxies::All(format!("http://u:SECRET@{closed}")),
        )
        .unwrap();
        for client in [refused, via_proxy] {
            let e = client.call("SECRET", Bytes::from_static(b"{}")).await;
            errors.push(Box::new(e.expect_err("nothing listens")));
        }
        for e in &errors {
            for level in chain(e.as_ref()) {
                assert!(!level.contains("SECRET"), "a secret shown: {level}");
            }
        }
        let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            texts[0].contains("invalid endpoint ftp://host"),
            "{texts:?}"
        );
        assert!(
            texts[5].contains("through the proxy http://127.0.0.1"),
            "{texts:?}"
        );
    }
}
