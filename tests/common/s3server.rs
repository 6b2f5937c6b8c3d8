//! A real S3 server in-process: `s3s` with its file-system backend (buckets
//! are folders under a root), on 127.0.0.1:0, checking SigV4 signatures
//! against one key pair. Used by the S3 tests and the benchmark.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub const KEY_ID: &str = "msgext-test-key-id";
pub const SECRET: &str = "msgext-test-secret-9f2c";

pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub root: PathBuf,
    /// While set, conditional PUTs of keys holding this text are answered
    /// 501 NotImplemented, as by a store without conditional writes.
    pub refuse_conditional: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// While set, a delete naming a key that holds this text (a DELETE, or a
    /// DeleteObjects whose body names one) is answered 403 AccessDenied, as
    /// by a bucket whose policy denies s3:DeleteObject. A DeleteObjects of
    /// several keys is refused whole (S3 would answer per key; msgext
    /// deletes one key a request).
    pub refuse_delete: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl S3Server {
    /// Serve `root` (with the `buckets` made) on the current tokio runtime.
    pub async fn start(root: &Path, buckets: &[&str]) -> S3Server {
        for b in buckets {
            std::fs::create_dir_all(root.join(b)).unwrap();
        }
        let fs = s3s_fs::FileSystem::new(root).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(KEY_ID, SECRET));
        let s3 = builder.build();
        // A request the server has received runs to its end even if the
        // client goes away, as on a real S3. hyper drops a request's future
        // when its connection closes, and s3s-fs's CompleteMultipartUpload
        // is not atomic under that: cut after it forgets the upload id, it
        // leaves the parts on disk for good. A test that kills msgext
        // mid-upload would then see server-side leaks no real store has.
        //
        // s3s-fs checks If-None-Match and then writes: two conditional PUTs
        // of one key at the same instant could both succeed, where S3, GCS
        // and Azure let exactly one win. Conditional PUTs are served one at
        // a time here, so that the server is as strict as a real store.
        let conditional = std::sync::Arc::new(tokio::sync::Mutex::new(()));
        let refuse_conditional = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let refused = refuse_conditional.clone();
        let refuse_delete = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let delete_refused = refuse_delete.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let is_conditional = req.method() == hyper::Method::PUT
                    && req.headers().contains_key(hyper::header::IF_NONE_MATCH);
                let refuse = is_conditional && holds(&refused, req.uri().path());
                // object_store deletes through DeleteObjects (POST ?delete),
                // the keys in its body; a plain DELETE names the key in its path.
                let deleting = req.method() == hyper::Method::DELETE
                    || (req.method() == hyper::Method::POST
                        && req.uri().query().is_some_and(|q| {
                            q.split('&').any(|p| p == "delete" || p == "delete=")
                        }));
                let deny = deleting.then(|| delete_refused.clone());
                let one_at_a_time = is_conditional.then(|| conditional.clone());
                let s3 = s3.clone();
                let handled = tokio::spawn(async move {
                    if refuse {
                        return Ok(refusal(
                            hyper::StatusCode::NOT_IMPLEMENTED,
                            "NotImplemented",
                            "A header you provided implies functionality that is not implemented",
                        ));
                    }
                    let (parts, body) = req.into_parts();
                    let body = match deny {
                        Some(text) => {
                            use http_body_util::BodyExt;
                            let Ok(bytes) = body.collect().await.map(|b| b.to_bytes()) else {
                                return Ok(refusal(
                                    hyper::StatusCode::BAD_REQUEST,
                                    "IncompleteBody",
                                    "The request body ended early",
                                ));
                            };
                            let said =
                                format!("{}{}", parts.uri.path(), String::from_utf8_lossy(&bytes));
                            if holds(&text, &said) {
                                return Ok(refusal(
                                    hyper::StatusCode::FORBIDDEN,
                                    "AccessDenied",
                                    "Access Denied",
                                ));
                            }
                            s3s::Body::from(bytes)
                        }
                        None => s3s::Body::from(body),
                    };
                    let _turn = match &one_at_a_time {
                        Some(m) => Some(m.lock().await),
                        None => None,
                    };
                    s3.call(hyper::Request::from_parts(parts, body)).await
                });
                async move { handled.await.expect("the S3 handler panicked") }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let http =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let conn = http
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server {
            url: format!("http://{addr}"),
            root: root.to_owned(),
            refuse_conditional,
            refuse_delete,
        }
    }

    /// What a user sets to export to this server, with this secret.
    pub fn env(&self, secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }
}

/// An environment as `Command::envs` and the test helpers take it.
pub fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Whether the refusal's text is set and found in `said`.
fn holds(text: &std::sync::Mutex<Option<String>>, said: &str) -> bool {
    let text = text.lock().unwrap();
    text.as_deref().is_some_and(|k| said.contains(k))
}

/// An S3 error answer.
fn refusal(status: hyper::StatusCode, code: &str, message: &str) -> hyper::Response<s3s::Body> {
    let body = format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>");
    let mut answer = hyper::Response::new(s3s::Body::from(body));
    *answer.status_mut() = status;
    answer
}
