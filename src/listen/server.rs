//! The callback URL: every POST is checked (the app, the signature, the
//! time), read (at most 1 MiB, within 10 s), and an extension callback is
//! answered OK only once the journal holds it. `GET /healthz` says whether
//! the journal takes events.

use super::writer::{Appender, Durable};
use super::{Counters, REFUSALS};
use crate::api::callback::{self, CallbackQuery, Refused};
use crate::fetch::StopSignal;
use crate::table::events::Received;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest body read (a callback lists at most 20 pairs).
pub(crate) const MAX_BODY: usize = 1 << 20;
/// A client has this long to send its headers, and again its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The service waits 2 s for an answer: an event not on disk by then is answered 503.
const DURABLE_WITHIN: Duration = Duration::from_millis(1500);
/// Requests in flight when the listener stops get this long to finish.
const GRACE: Duration = Duration::from_secs(5);
/// Refusals are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Server {
    pub(super) sdkappid: u64,
    pub(super) token: Option<String>,
    pub(super) appender: Appender,
    pub(super) counters: Arc<Counters>,
    pub(super) healthy: Durable,
    pub(super) last_log: Mutex<Option<Instant>>,
}

/// Accept connections until `stop`, then let those in flight finish.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    server: Arc<Server>,
    stop: StopSignal,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.stopped() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    conns.spawn(connection(stream, server.clone(), stop.clone()));
                }
                // Out of file descriptors and the like: pause instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(GRACE, drained).await.is_err() {
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

async fn connection(stream: tokio::net::TcpStream, server: Arc<Server>, stop: StopSignal) {
    let svc = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, std::convert::Infallible>(server.handle(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.stopped() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn answer(status: StatusCode, error: Option<&str>) -> Response<Full<Bytes>> {
    let body = match error {
        None => serde_json::json!({"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}),
        Some(e) => serde_json::json!({"ActionStatus": "FAIL", "ErrorInfo": e, "ErrorCode": 1}),
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl Server {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() == Method::GET && req.uri().path() == "/healthz" {
            return match self.healthy.healthy.load(Ordering::Relaxed) {
                true => answer(StatusCode::OK, None),
                false => answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("the journal cannot be written"),
                ),
            };
        }
        if req.method() != Method::POST {
            return answer(StatusCode::METHOD_NOT_ALLOWED, Some("callbacks are POSTed"));
        }
        let query = CallbackQuery::parse(req.uri().query().unwrap_or(""));
        let now = chrono::Utc::now();
        if let Err(r) = callback::verify(
            &query,
            self.sdkappid,
            self.token.as_deref(),
            now.timestamp(),
        ) {
            return self.refuse(r);
        }
        let body = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err((status, why)) => return self.bad(status, why),
        };
        let event = match callback::parse_event(&body) {
            Err(e) => return self.bad(StatusCode::BAD_REQUEST, &e.to_string()),
            Ok(None) => {
                self.counters.ignored.fetch_add(1, Ordering::Relaxed);
                return answer(StatusCode::OK, None);
            }
            Ok(Some(e)) => e,
        };
        let received = Received {
            event,
            received_us: now.timestamp_micros(),
            platform: query.platform,
        };
        let line = serde_json::to_vec(&received).unwrap_or_default();
        match tokio::time::timeout(DURABLE_WITHIN, self.appender.append(line)).await {
            Ok(true) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                answer(StatusCode::OK, None)
            }
            _ => {
                self.counters.unstored.fetch_add(1, Ordering::Relaxed);
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some("not stored: the journal cannot be written"),
                )
            }
        }
    }

    fn refuse(&self, r: Refused) -> Response<Full<Bytes>> {
        let i = REFUSALS.iter().position(|x| *x == r).unwrap_or(0);
        let n = self.counters.refused[i].fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            eprintln!(
                "msgext: warning: refused a callback: {r} ({n} so far for this reason; logged at most once a minute)"
            );
        }
        let status = match r {
            Refused::OtherApp => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        };
        answer(status, Some(&r.to_string()))
    }

    fn bad(&self, status: StatusCode, why: &str) -> Response<Full<Bytes>> {
        self.counters.bad.fetch_add(1, Ordering::Relaxed);
        answer(status, Some(why))
    }
}

/// The body, at most `MAX_BODY` bytes, within `READ_TIMEOUT`.
async fn read_body(body: Incoming) -> Result<Bytes, (StatusCode, &'static str)> {
    let read = Limited::new(body, MAX_BODY).collect();
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err((StatusCode::PAYLOAD_TOO_LARGE, "the body is over 1 MiB"))
        }
        Ok(Err(_)) => Err((StatusCode::BAD_REQUEST, "the body could not be read")),
    }
}
