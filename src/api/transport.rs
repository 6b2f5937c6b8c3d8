//! How a call's bytes reach the endpoint: a pooled HTTP/1.1 client on hyper,
//! with rustls and the platform's certificate verifier for `https`, and the
//! proxy the environment names (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! `NO_PROXY`, read as curl reads them).
//!
//! The API client used reqwest before. Its redirect layer (present even with
//! redirects off) and its response parsed each call's ~300-byte URL twice
//! more: 15% of msgext's CPU a call at the quota (README, Performance). The
//! endpoint is fixed for a run, so the proxy decision is made once, here,
//! not per call.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Uri;
use hyper::header::HeaderValue;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

type Https<C> = hyper_rustls::HttpsConnector<C>;
type Body = Full<Bytes>;

/// The route to the endpoint, chosen once per client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Straight to an `http` endpoint: no TLS set up at all (no
    /// certificates loaded).
    Plain,
    /// Straight to an `https` endpoint.
    Direct,
    /// An `https` endpoint through an HTTP proxy: a CONNECT tunnel, TLS inside it.
    Tunnel {
        proxy: Uri,
        auth: Option<HeaderValue>,
    },
    /// An `http` endpoint through an HTTP proxy: each request goes to the
    /// proxy with the endpoint's full URL.
    Forward {
        proxy: Uri,
        auth: Option<HeaderValue>,
    },
}

impl Route {
    /// The route for `endpoint` under the proxy rules `proxies`; an error
    /// (naming the proxy without its credentials) for a proxy msgext cannot
    /// use.
    pub fn choose(endpoint: &Uri, proxies: &Matcher) -> Result<Route, String> {
        let tls = endpoint.scheme_str() == Some("https");
        let Some(via) = proxies.intercept(endpoint) else {
            return Ok(if tls { Route::Direct } else { Route::Plain });
        };
        let proxy = via.uri().clone();
        if proxy.scheme_str() != Some("http") {
            return Err(format!(
                "the proxy {} (from HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) is not an http:// \
                 proxy; msgext talks to proxies over plain HTTP: give http://host:port, or leave \
                 {} out with NO_PROXY",
                shown(&proxy),
                endpoint.host().unwrap_or("the endpoint")
            ));
        }
        let auth = via.basic_auth().cloned();
        Ok(if tls {
            Route::Tunnel { proxy, auth }
        } else {
            Route::Forward { proxy, auth }
        })
    }
}

impl Route {
    /// The proxy calls go through, as errors may show it.
    pub fn proxy(&self) -> Option<String> {
        match self {
            Route::Plain | Route::Direct => None,
            Route::Tunnel { proxy, .. } | Route::Forward { proxy, .. } => Some(shown(proxy)),
        }
    }
}

/// A proxy's URL as errors may show it: scheme, host and port, never the
/// credentials.
fn shown(proxy: &Uri) -> String {
    format!(
        "{}://{}",
        proxy.scheme_str().unwrap_or("?"),
        proxy
            .authority()
            .map_or("?", |a| a.as_str().rsplit('@').next().unwrap_or("?"))
    )
}

/// A pooled client for one route. `send` takes a request for the endpoint
/// and gives the response head; the body is read by the caller.
#[derive(Clone)]
pub enum Transport {
    Plain(Client<HttpConnector, Body>),
    Direct(Client<Https<HttpConnector>, Body>),
    Tunnel(Client<Https<Tunnel<HttpConnector>>, Body>),
    Forward {
        client: Client<ToProxy, Body>,
        auth: Option<HeaderValue>,
    },
}

/// A send's failure: connecting (to the endpoint or the proxy, TLS
/// included) or after.
pub type SendError = hyper_util::client::legacy::Error;

impl Transport {
    /// `connect_timeout` bounds the TCP connect (to the endpoint or the
    /// proxy); the caller bounds the whole call.
    pub fn new(route: Route, connect_timeout: Duration) -> Result<Transport, String> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        // The TLS layer hands `https` URLs down to it.
        tcp.enforce_http(false);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new());
        Ok(match route {
            Route::Plain => Transport::Plain(builder.build(tcp)),
            Route::Direct => Transport::Direct(builder.build(https(tcp)?)),
            Route::Tunnel { proxy, auth } => {
                let mut tunnel = Tunnel::new(proxy, tcp);
                if let Some(auth) = auth {
                    tunnel = tunnel.with_auth(auth);
                }
                Transport::Tunnel(builder.build(https(tunnel)?))
            }
            Route::Forward { proxy, auth } => Transport::Forward {
                client: builder.build(ToProxy { tcp, proxy }),
                auth,
            },
        })
    }

    pub async fn send(
        &self,
        mut req: hyper::Request<Body>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
        match self {
            Transport::Plain(c) => c.request(req).await,
            Transport::Direct(c) => c.request(req).await,
            Transport::Tunnel(c) => c.request(req).await,
            Transport::Forward { client, auth } => {
                if let Some(auth) = auth {
                    req.headers_mut()
                        .insert(hyper::header::PROXY_AUTHORIZATION, auth.clone());
                }
                client.request(req).await
            }
        }
    }
}

/// rustls with the platform's verifier, as reqwest set it up: the system's
/// roots (or `SSL_CERT_FILE` / `SSL_CERT_DIR`), TLS 1.2 and 1.3, HTTP/1.1.
fn https<C>(inner: C) -> Result<Https<C>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("cannot set up TLS certificate checks: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        // Not dangerous: this is the platform's full verifier, installed
        // through the API rustls offers for custom verifiers.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(inner))
}

/// Connects every request to the proxy, and marks the connection as one to
/// a proxy so that requests carry the endpoint's full URL.
#[derive(Clone)]
pub struct ToProxy {
    tcp: HttpConnector,
    proxy: Uri,
}

impl tower_service::Service<Uri> for ToProxy {
    type Response = ProxyConn;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<ProxyConn, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, _endpoint: Uri) -> Self::Future {
        let connecting = self.tcp.call(self.proxy.clone());
        Box::pin(async move { Ok(ProxyConn(connecting.await?)) })
    }
}

/// A TCP connection to the proxy.
pub struct ProxyConn(TokioIo<TcpStream>);

impl Connection for ProxyConn {
    fn connected(&self) -> Connected {
        self.0.connected().proxy(true)
    }
}

impl Read for ProxyConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for ProxyConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(http: &str, https: &str, no: &str) -> Matcher {
        Matcher::builder().http(http).https(https).no(no).build()
    }

    /// The route for each endpoint scheme under each proxy setting.
    #[test]
    fn the_route_follows_the_scheme_and_the_proxy_rules() {
        let api: Uri = "https://adminapisgp.im.qcloud.com/v4/x".parse().unwrap();
        let local: Uri = "http://127.0.0.1:8080/v4/x".parse().unwrap();
        let auth = |u: &str, p: &str| {
            use base64::Engine;
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            Some(HeaderValue::from_str(&format!("Basic {v}")).unwrap())
        };
        let proxy: Uri = "http://proxy.corp:3128".parse().unwrap();
        let tunnel = |auth| {
            Ok(Route::Tunnel {
                proxy: proxy.clone(),
                auth,
            })
        };
        let forward = |auth| {
            Ok(Route::Forward {
                proxy: proxy.clone(),
                auth,
            })
        };
        let p = "http://proxy.corp:3128";
        let table: Vec<(&Uri, Matcher, Result<Route, &str>)> = vec![
            (&api, rules("", "", ""), Ok(Route::Direct)),
            (&local, rules("", "", ""), Ok(Route::Plain)),
            (&api, rules("", p, ""), tunnel(None)),
            (
                &api,
                rules("", "http://me:s%40cret@proxy.corp:3128", ""),
                tunnel(auth("me", "s@cret")),
            ),
            // HTTPS_PROXY is for https endpoints only.
            (&local, rules("", p, ""), Ok(Route::Plain)),
            (
                &local,
                rules("http://me:pw@proxy.corp:3128", "", ""),
                forward(auth("me", "pw")),
            ),
            (&api, rules("", p, "im.qcloud.com"), Ok(Route::Direct)),
            (&local, rules(p, "", "127.0.0.1"), Ok(Route::Plain)),
            (
                &api,
                rules("", "socks5://me:pw@proxy.corp:1080", ""),
                Err("socks5://proxy.corp:1080"),
            ),
            (
                &api,
                rules("", "https://proxy.corp:3129", ""),
                Err("https://proxy.corp:3129"),
            ),
        ];
        for (endpoint, matcher, want) in table {
            let got = Route::choose(endpoint, &matcher);
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{endpoint} {matcher:?}"),
                (Err(e), Err(names)) => {
                    assert!(e.contains(names), "{e}");
                    assert!(!e.contains("pw"), "the proxy's password is not shown: {e}");
                    assert!(e.contains("NO_PROXY"), "{e}");
                }
                _ => panic!("{endpoint} {matcher:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}
