//! The simulator's extension callbacks: each change it applies is POSTed
//! to the app's callback URL as the service does (the query with the app,
//! the command and, with a token, `RequestTime` and `Sign`; the body of
//! `ExtensionEvent::body`), some lost and some sent twice on request, as
//! the service's un-retried deliveries are.

use super::store::SplitMix64;
use crate::api::callback::{self, ExtensionEvent};
use futures_util::StreamExt;

/// Callbacks in flight at once.
const IN_FLIGHT: usize = 32;

/// Where and how callbacks go.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The callback URL (a query of its own is kept).
    pub url: String,
    /// The webhook token; `None`: unsigned.
    pub token: Option<String>,
    pub sdkappid: u64,
    /// Share never sent.
    pub loss: f64,
    /// Share sent twice.
    pub twice: f64,
    /// Seeds which ones.
    pub seed: u64,
}

/// What became of the callbacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Answered OK (a callback sent twice counts twice).
    pub ok: u64,
    /// Never sent (`loss`).
    pub lost: u64,
    /// Sent a second time (`twice`).
    pub twice: u64,
    /// Not answered OK, or not answered.
    pub failed: u64,
    /// The events that reached the listener (answered OK at least once), in order.
    pub arrived: Vec<usize>,
}

impl Delivered {
    pub fn one_line(&self) -> String {
        format!(
            "{} answered OK, {} lost on purpose, {} sent twice, {} failed",
            self.ok, self.lost, self.twice, self.failed
        )
    }
}

impl Delivery {
    /// The URL of one callback, signed now.
    pub fn url_for(&self, command: &str, now_s: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("SdkAppid", &self.sdkappid.to_string())
            .append_pair("CallbackCommand", command)
            .append_pair("contenttype", "json")
            .append_pair("ClientIP", "127.0.0.1")
            .append_pair("OptPlatform", "RESTAPI");
        if let Some(token) = &self.token {
            let time = now_s.to_string();
            q.append_pair("RequestTime", &time)
                .append_pair("Sign", &callback::sign(token, &time));
        }
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", self.url, q.finish())
    }
}

/// POST the callbacks of `events` (some lost, some twice, as asked).
pub async fn deliver(d: &Delivery, events: &[ExtensionEvent]) -> Delivered {
    let client = match reqwest::Client::builder().no_proxy().build() {
        Ok(c) => c,
        Err(_) => {
            return Delivered {
                failed: events.len() as u64,
                ..Delivered::default()
            };
        }
    };
    let mut rng = SplitMix64::new(d.seed ^ 0xCA11_BAC5);
    let mut out = Delivered::default();
    let mut sends = Vec::new();
    for i in 0..events.len() {
        if rng.unit() < d.loss {
            out.lost += 1;
            continue;
        }
        sends.push(i);
        if rng.unit() < d.twice {
            out.twice += 1;
            sends.push(i);
        }
    }
    let answers: Vec<(usize, bool)> = futures_util::stream::iter(sends)
        .map(|i| {
            let client = &client;
            async move { (i, post(client, d, &events[i]).await) }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    for (i, ok) in answers {
        match ok {
            true => {
                out.ok += 1;
                if out.arrived.last() != Some(&i) {
                    out.arrived.push(i);
                }
            }
            false => out.failed += 1,
        }
    }
    out
}

/// One callback; whether it was answered OK.
async fn post(client: &reqwest::Client, d: &Delivery, e: &ExtensionEvent) -> bool {
    let url = d.url_for(e.command(), chrono::Utc::now().timestamp());
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(e.body())
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await;
    let Ok(r) = sent else { return false };
    if !r.status().is_success() {
        return false;
    }
    let Ok(bytes) = r.bytes().await else {
        return false;
    };
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    body["ActionStatus"] == "OK"
}
