//! The Tencent Cloud Chat REST API as msgext uses it: regions and their
//! domains, the wire types of `get_key_values`, UserSig signing (`sign`) and a
//! single HTTP call (`client`, on reqwest), the history APIs (`history`)
//! and the pairs of an answer (`pairs`); what each error code means is the
//! ground's (`crate::codes`). Nothing here retries, sleeps or decides policy.

pub mod callback;
pub mod client;
pub mod history;
pub mod pairs;
pub mod sign;
pub(crate) mod wire;

use std::fmt;
use std::str::FromStr;

/// An answer of the API: every one carries an `ErrorCode` and `ErrorInfo`.
pub(crate) trait Answer {
    fn error_code(&self) -> i64;
    fn into_info(self) -> String;
}

/// Why an answer with ErrorCode 0 was not taken for data: a field the API
/// documents for an OK answer is missing, or the answer contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct BadAnswer(pub &'static str);

/// Where the UserSig comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Key(String),
    UserSig(String),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Key(_) => "Secret::Key(<redacted>)",
            Secret::UserSig(_) => "Secret::UserSig(<redacted>)",
        })
    }
}

/// Where the API is and how every call goes: the same for export and discover.
#[derive(Debug, Clone)]
pub struct Connection {
    /// `https://{domain}` of the region, or the `--endpoint`.
    pub base_url: String,
    pub sdkappid: u64,
    pub identifier: String,
    pub rate: u32,
    pub max_attempts: u32,
    pub secret: Secret,
    /// The circuit breaker: stop when no call succeeds for this long.
    pub give_up_after: std::time::Duration,
}

/// At most this many pairs come back in one page.
pub(crate) const PAGE_SIZE: usize = 200;

/// A data center, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Region {
    China,
    Singapore,
    Seoul,
    Tokyo,
    Frankfurt,
    Mumbai,
    SiliconValley,
    Jakarta,
}

impl Region {
    pub(crate) const ALL: [Region; 8] = [
        Region::China,
        Region::Singapore,
        Region::Seoul,
        Region::Tokyo,
        Region::Frankfurt,
        Region::Mumbai,
        Region::SiliconValley,
        Region::Jakarta,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Region::China => "china",
            Region::Singapore => "singapore",
            Region::Seoul => "seoul",
            Region::Tokyo => "tokyo",
            Region::Frankfurt => "frankfurt",
            Region::Mumbai => "mumbai",
            Region::SiliconValley => "silicon-valley",
            Region::Jakarta => "jakarta",
        }
    }

    pub(crate) fn domain(self) -> &'static str {
        match self {
            Region::China => "console.tim.qq.com",
            Region::Singapore => "adminapisgp.im.qcloud.com",
            Region::Seoul => "adminapikr.im.qcloud.com",
            Region::Tokyo => "adminapijpn.im.qcloud.com",
            Region::Frankfurt => "adminapiger.im.qcloud.com",
            Region::Mumbai => "adminapiind.im.qcloud.com",
            Region::SiliconValley => "adminapiusa.im.qcloud.com",
            Region::Jakarta => "adminapiidn.im.qcloud.com",
        }
    }

    /// The region whose domain a base URL names, if any.
    pub(crate) fn from_base_url(base: &str) -> Option<Region> {
        let host = base.split("://").nth(1)?.split(['/', ':']).next()?;
        Region::ALL
            .into_iter()
            .find(|r| r.domain().eq_ignore_ascii_case(host))
    }

    /// `https://{domain}`, the base the call path is appended to.
    pub(crate) fn base_url(self) -> String {
        format!("https://{}", self.domain())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Region::ALL.iter().map(|r| r.name()).collect();
                format!("unknown region {s:?}; one of: {}", names.join(", "))
            })
    }
}

/// The full URL of a call below a base (`https://domain` or an `--endpoint`).
pub(crate) fn call_url(base: &str, path: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_the_documented_domains() {
        let table = [
            ("china", "console.tim.qq.com"),
            ("singapore", "adminapisgp.im.qcloud.com"),
            ("seoul", "adminapikr.im.qcloud.com"),
            ("tokyo", "adminapijpn.im.qcloud.com"),
            ("frankfurt", "adminapiger.im.qcloud.com"),
            ("mumbai", "adminapiind.im.qcloud.com"),
            ("silicon-valley", "adminapiusa.im.qcloud.com"),
            ("jakarta", "adminapiidn.im.qcloud.com"),
        ];
        for (name, domain) in table {
            let r: Region = name.parse().unwrap();
            assert_eq!(r.domain(), domain);
            assert_eq!(r.name(), name);
        }
        assert!("mars".parse::<Region>().is_err());
        for r in Region::ALL {
            assert_eq!(Region::from_base_url(&r.base_url()), Some(r));
        }
        assert_eq!(Region::from_base_url("http://127.0.0.1:8080"), None);
        assert_eq!(
            call_url(
                "http://127.0.0.1:9/",
                "/v4/openim_msg_ext_http_svc/get_key_values"
            ),
            "http://127.0.0.1:9/v4/openim_msg_ext_http_svc/get_key_values"
        );
    }
}
