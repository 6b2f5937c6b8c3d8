//! UserSig (TLSSigAPIv2): making one from the secret key, and checking one (the
//! simulator's side). Pure functions of their arguments: the caller supplies
//! `now`, nothing here reads the clock.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::{Read, Write};

type HmacSha256 = Hmac<Sha256>;

/// The validity msgext asks for when it makes its own UserSig.
pub(crate) const DEFAULT_EXPIRE_SECS: i64 = 86_400;

/// `TLS.sig`: standard base64 of HMAC-SHA256 over the four `TLS.*` lines,
/// keyed with the secret key's UTF-8 bytes (not hex-decoded).
pub(crate) fn tls_sig(
    key: &str,
    sdkappid: u64,
    identifier: &str,
    time: i64,
    expire: i64,
) -> String {
    let content = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(content.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A complete UserSig: the JSON document, zlib-compressed, base64 with the
/// URL-safe substitutions `+`→`*`, `/`→`-`, `=`→`_`.
pub fn user_sig(key: &str, sdkappid: u64, identifier: &str, now: i64, expire: i64) -> String {
    let doc = serde_json::json!({
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdkappid,
        "TLS.expire": expire,
        "TLS.time": now,
        "TLS.sig": tls_sig(key, sdkappid, identifier, now, expire),
    });
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    z.write_all(doc.to_string().as_bytes())
        .expect("write to Vec");
    let compressed = z.finish().expect("finish into Vec");
    url_encode(&STANDARD.encode(compressed))
}

fn url_encode(b64: &str) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

fn url_decode(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect()
}

/// What a valid UserSig says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SigClaims {
    pub(crate) identifier: String,
    pub(crate) sdkappid: u64,
    pub(crate) time: i64,
    pub(crate) expire: i64,
}

impl SigClaims {
    pub(crate) fn expires_at(&self) -> i64 {
        self.time.saturating_add(self.expire)
    }
}

/// Why a UserSig was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SigError {
    #[error("UserSig is empty")]
    Empty,
    #[error("UserSig cannot be decoded: {0}")]
    Malformed(String),
    #[error("UserSig signature does not match")]
    BadSignature,
    #[error("UserSig expired at {0}")]
    Expired(i64),
}

/// Decode a UserSig and check its HMAC with `key` and its expiry against `now`.
/// The caller compares the claimed identifier and SDKAppID with the request's.
pub(crate) fn verify(sig: &str, key: &str, now: i64) -> Result<SigClaims, SigError> {
    if sig.is_empty() {
        return Err(SigError::Empty);
    }
    let compressed = STANDARD
        .decode(url_decode(sig))
        .map_err(|e| SigError::Malformed(format!("base64: {e}")))?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .take(64 * 1024)
        .read_to_end(&mut json)
        .map_err(|e| SigError::Malformed(format!("zlib: {e}")))?;
    let doc: serde_json::Value =
        serde_json::from_slice(&json).map_err(|e| SigError::Malformed(format!("json: {e}")))?;
    let field = |name: &str| {
        doc.get(name)
            .ok_or_else(|| SigError::Malformed(format!("no {name}")))
    };
    let int = |name: &str| {
        field(name)?
            .as_i64()
            .ok_or_else(|| SigError::Malformed(format!("{name} is not a number")))
    };
    let claims = SigClaims {
        identifier: field("TLS.identifier")?
            .as_str()
            .ok_or_else(|| SigError::Malformed("TLS.identifier is not a string".into()))?
            .to_owned(),
        sdkappid: field("TLS.sdkappid")?
            .as_u64()
            .ok_or_else(|| SigError::Malformed("TLS.sdkappid is not a number".into()))?,
        time: int("TLS.time")?,
        expire: int("TLS.expire")?,
    };
    let claimed = field("TLS.sig")?
        .as_str()
        .ok_or_else(|| SigError::Malformed("TLS.sig is not a string".into()))?;
    let expected = tls_sig(
        key,
        claims.sdkappid,
        &claims.identifier,
        claims.time,
        claims.expire,
    );
    if claimed != expected {
        return Err(SigError::BadSignature);
    }
    if claims.expires_at() < now {
        return Err(SigError::Expired(claims.expires_at()));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

    #[test]
    fn tls_sig_known_answers() {
        // From api/chat-rest-api.md (official TLSSigAPIv2 libraries).
        let table = [
            (
                "xiaojun",
                1569910200,
                15552000,
                "gOoeW13s19Fgyn8RwlEt/rLkw3wzLq9M+SqBbXTIfnQ=",
            ),
            (
                "administrator",
                1569910200,
                86400,
                "GZS+x4PLMuqlibyHoSE04jlbvPSaP0fVVd2E5D9B7hA=",
            ),
            (
                "0",
                1569910200,
                15552000,
                "CpjuBdQs9ZwnuGAJR8onoOeI9fweX2vIMMY94iOJWJY=",
            ),
            (
                "administrator",
                1700000000,
                86400,
                "yLAe+w7WUeUuqbV9h/TX78u21oTGi+i9Zp1u3PpnY60=",
            ),
        ];
        for (identifier, time, expire, want) in table {
            assert_eq!(
                tls_sig(KEY, 1400000000, identifier, time, expire),
                want,
                "{identifier} {time}"
            );
        }
    }

    #[test]
    fn decodes_the_official_python_usersig() {
        let official = "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5EFEzS0tDAyO4eHFmOsiGdP-81HBD42JDS7f0yjyLoPIc1xL9Ip-scuPyKp9CS1-t4EKnpIgQz7S8QFulWgAoqDP8";
        let claims = verify(official, KEY, 1569910200).unwrap();
        assert_eq!(
            claims,
            SigClaims {
                identifier: "xiaojun".into(),
                sdkappid: 1400000000,
                time: 1569910200,
                expire: 15552000
            }
        );
    }

    #[test]
    fn own_usersig_round_trips_and_is_refused_when_wrong() {
        let sig = user_sig(KEY, 1400000000, "administrator", 1700000000, 86400);
        assert!(!sig.contains(['+', '/', '=']), "URL-safe alphabet: {sig}");
        let c = verify(&sig, KEY, 1700000000 + 86400).unwrap();
        assert_eq!(c.identifier, "administrator");
        assert_eq!(c.sdkappid, 1400000000);
        assert_eq!(
            verify(&sig, KEY, 1700000000 + 86401),
            Err(SigError::Expired(1700086400))
        );
        assert_eq!(
            verify(&sig, "another key", 1700000000),
            Err(SigError::BadSignature)
        );
        assert_eq!(verify("", KEY, 0), Err(SigError::Empty));
        assert!(matches!(
            verify("not*a*sig", KEY, 0),
            Err(SigError::Malformed(_))
        ));
    }
}
