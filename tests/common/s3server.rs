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
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let is_conditional = req.method() == hyper::Method::PUT
                    && req.headers().contains_key(hyper::header::IF_NONE_MATCH);
                let refuse = is_conditional
                    && refused
                        .lock()
                        .unwrap()
                        .as_deref()
                        .is_some_and(|k| req.uri().path().contains(k));
                let one_at_a_time = is_conditional.then(|| conditional.clone());
                let call = hyper::service::Service::call(&s3, req);
                let handled = tokio::spawn(async move {
                    if refuse {
                        let body = "<Error><Code>NotImplemented</Code><Message>A header you \
                                    provided implies functionality that is not implemented\
                                    </Message></Error>";
                        let mut answer = hyper::Response::new(s3s::Body::from(body.to_owned()));
                        *answer.status_mut() = hyper::StatusCode::NOT_IMPLEMENTED;
                        return Ok(answer);
                    }
                    let _turn = match &one_at_a_time {
                        Some(m) => Some(m.lock().await),
                        None => None,
                    };
                    call.await
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
