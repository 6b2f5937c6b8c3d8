//! One `get_key_values` call over HTTP: the URL, the query (with a fresh
//! `random` on every attempt), the JSON body, and decoding the answer. Also
//! the credentials that supply a UserSig per call and renew it before expiry.
//! Nothing here retries or sleeps: `fetch` decides what to do with the result.

use super::sign;
use super::wire::GetKeyValuesResponse;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The client's own timeout per call: longer than the backend's 3 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub fn code(&self) -> String {
        match self {
            CallError::Timeout => "timeout".into(),
            CallError::Connect(_) | CallError::Network(_) => "network".into(),
            CallError::Http { status, .. } => format!("http_{status}"),
            CallError::Decode(_) => "bad_response".into(),
        }
    }
}

/// Where the UserSig of each call comes from.
pub enum Credentials {
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
pub struct SecretSigner {
    key: String,
    sdkappid: u64,
    identifier: String,
    expire: i64,
    cached: Mutex<Option<(Arc<str>, i64)>>,
}

impl Credentials {
    pub fn from_secret(key: String, sdkappid: u64, identifier: &str, expire: i64) -> Self {
        Credentials::Secret(SecretSigner {
            key,
            sdkappid,
            identifier: identifier.to_owned(),
            expire: expire.max(2),
            cached: Mutex::new(None),
        })
    }

    pub fn ready(sig: &str) -> Self {
        Credentials::Ready(Arc::from(sig))
    }

    pub fn can_renew(&self) -> bool {
        matches!(self, Credentials::Secret(_))
    }

    /// The UserSig to send at `now` (Unix seconds); a new one is made once half
    /// of the current one's validity has passed.
    pub fn usersig(&self, now: i64) -> Arc<str> {
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
    pub fn renew(&self) {
        if let Credentials::Secret(s) = self {
            *s.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }
}

/// One pooled HTTP client bound to an endpoint, an SDKAppID and an admin identifier.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    /// Parsed once: a call only sets the query.
    url: reqwest::Url,
    sdkappid: Arc<str>,
    identifier: Arc<str>,
    /// `url` with every parameter but `random`, for the UserSig it was made
    /// for: a call clones it and appends `random`, instead of encoding the
    /// UserSig and parsing the whole query again (a few percent of the CPU
    /// a call costs at the quota).
    signed: Arc<std::sync::Mutex<Option<(String, reqwest::Url)>>>,
}

impl ApiClient {
    /// `base` is `https://{domain}` or an `--endpoint` such as
    /// `http://127.0.0.1:PORT`; `path` is the API's (`Kind::api_path`).
    pub fn new(
        base: &str,
        path: &str,
        sdkappid: u64,
        identifier: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(&super::call_url(base, path))
            .map_err(|e| format!("invalid endpoint {base:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            // The API does not redirect. Following one would send the
            // UserSig in the query to wherever it points (and turn the POST
            // into a GET on 301/302): it is a misconfigured endpoint, and the
            // run says so (`fetch::explain_fatal`).
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("msgext/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ApiClient {
            http,
            url,
            sdkappid: Arc::from(sdkappid.to_string()),
            identifier: Arc::from(identifier),
            signed: Arc::default(),
        })
    }

    /// The URL of a call signed with `usersig`, `random` included.
    fn call_url(&self, usersig: &str) -> reqwest::Url {
        let mut url = {
            let mut signed = self.signed.lock().unwrap_or_else(|p| p.into_inner());
            match &*signed {
                Some((sig, url)) if sig == usersig => url.clone(),
                _ => {
                    let mut url = self.url.clone();
                    url.query_pairs_mut()
                        .clear()
                        .append_pair("sdkappid", &self.sdkappid)
                        .append_pair("identifier", &self.identifier)
                        .append_pair("usersig", usersig)
                        .append_pair("contenttype", "json");
                    *signed = Some((usersig.to_owned(), url.clone()));
                    url
                }
            }
        };
        let mut random = itoa::Buffer::new();
        url.query_pairs_mut()
            .append_pair("random", random.format(rand::random::<u32>()));
        url
    }

    /// One POST of a JSON `body` (`MessageId::request_body`). `Ok` means a
    /// decodable answer, whatever its `ErrorCode`.
    pub async fn call(
        &self,
        usersig: &str,
        body: bytes::Bytes,
    ) -> Result<GetKeyValuesResponse, CallError> {
        let url = self.call_url(usersig);
        let resp = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
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
        let bytes = read_capped(resp, MAX_ANSWER_BYTES).await?;
        GetKeyValuesResponse::decode(&bytes).map_err(|e| {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
            CallError::Decode(format!("{e}; body starts {head:?}"))
        })
    }
}

/// The largest answer body read: 200 pairs of at most 100 + 1000 bytes,
/// JSON-escaped, fit many times over; a bigger one is a bad response, not a
/// reason to grow the resident set.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The body, or a bad response once it passes `cap` bytes (checked against
/// Content-Length first, then chunk by chunk).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<bytes::Bytes, CallError> {
    let too_big = || CallError::Decode(format!("answer larger than {} MiB", cap >> 20));
    match resp.content_length() {
        Some(n) if n > cap as u64 => return Err(too_big()),
        // A declared length within the cap: take the body as it came (no
        // copy when it came in one piece); the transport enforces the length.
        Some(_) => return resp.bytes().await.map_err(transport_error),
        None => {}
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

fn transport_error(e: reqwest::Error) -> CallError {
    // Never include the URL: it carries the UserSig.
    let e = e.without_url();
    if e.is_timeout() {
        CallError::Timeout
    } else if e.is_connect() {
        CallError::Connect(root_cause(&e))
    } else {
        CallError::Network(root_cause(&e))
    }
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
        )
        .unwrap();
        let params = |u: &reqwest::Url| -> Vec<(String, String)> {
            let mut p: Vec<(String, String)> = u.query_pairs().into_owned().collect();
            p.sort();
            p
        };
        let mut randoms = std::collections::HashSet::new();
        for sig in ["eJw+/a=b&c%d", "eJw+/a=b&c%d", "second-sig", "eJw+/a=b&c%d"] {
            let u = c.call_url(sig);
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
}
