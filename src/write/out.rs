//! `--out`: a local folder or a bucket URL, read strictly (a mistyped URL
//! is never taken for a folder), and the backend it opens.

use super::WriteError;
use super::local::LocalDir;
use super::store::LakeStore;
use std::path::{Path, PathBuf};

/// Where `--out` points: a local folder or an object-store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    Dir(PathBuf),
    /// `s3://bucket/prefix`, `gs://…` or `az://…`, without a trailing `/`.
    Url(String),
}

/// Why `--out` is refused. The text is shown without a query, a fragment
/// or user info (`shown`): a pasted signed URL must not reach a log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutError {
    #[error("--out {text} is not a well-formed URL; did you mean {meant}?")]
    Malformed { text: String, meant: String },
    #[error(
        "--out {text} looks like a URL but is not one; give s3://, gs:// or az:// for a bucket, \
         or ./{text} for a folder of that name"
    )]
    UrlLike { text: String },
    #[error(
        "--out {scheme}://…: the URL holds credentials (user:password@); give the bucket as \
         {scheme}://BUCKET/prefix and the credentials in the environment (AWS_*, \
         GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*)"
    )]
    Credentials { scheme: String },
    #[error("--out {text}: a file:// URL needs an absolute path (file:///path)")]
    RelativeFile { text: String },
    #[error(
        "--out {text}: give the bucket as s3://BUCKET/prefix (gs://, az://); an S3-compatible \
         endpoint goes in AWS_ENDPOINT_URL"
    )]
    Http { text: String },
    #[error("--out {text}: unknown scheme {scheme:?}; give a local folder or s3://, gs://, az://")]
    Scheme { text: String, scheme: String },
    #[error(
        "--out {text}: a bucket URL takes no ?query or #fragment (settings go in the environment)"
    )]
    Query { text: String },
    #[error("--out {text}: no bucket (s3://BUCKET/prefix)")]
    NoBucket { text: String },
    #[error("--out {text}: an empty prefix segment ('//'); did you mean {meant}?")]
    EmptySegment { text: String, meant: String },
    #[error("--out {text}: '.' and '..' are not prefixes")]
    DotSegment { text: String },
    #[error("--out {url}: no HOME to keep the run's state under; give --state-dir")]
    NoHome { url: String },
}

/// `text` as an error may show it: cut before a `?` or `#` (a query may
/// carry a signature), and user info before an `@` replaced by `…`.
fn shown(text: &str) -> String {
    let cut = text.find(['?', '#']).unwrap_or(text.len());
    let mut head = text[..cut].to_owned();
    if let Some((scheme, rest)) = head.split_once("://") {
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            head = format!("{scheme}://…@{}", &rest[at + 1..]);
        }
    }
    if cut < text.len() {
        head.push_str("?…");
    }
    head
}

impl Out {
    /// A path, a `file://` URL, or an object-store URL (`s3://`, `s3a://`,
    /// `gs://`, `az://`, `abfs(s)://`, `azure://`). Anything that starts like
    /// a URL (`word:`) and is not a well-formed one is refused, with what was
    /// probably meant, rather than taken for a folder called `s3:`.
    pub(crate) fn parse(text: &str) -> Result<Out, OutError> {
        let shown = || shown(text);
        let Some((scheme, rest)) = text.split_once("://") else {
            return match url_like_scheme(text) {
                Some(scheme) => Err(not_a_url(text, scheme)),
                None => Ok(Out::Dir(PathBuf::from(text))),
            };
        };
        if scheme.is_empty() || url_like_scheme(text).is_none() {
            return Ok(Out::Dir(PathBuf::from(text)));
        }
        // `user:password@` before the host: refused, and never echoed.
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && userinfo.contains(':')
        {
            return Err(OutError::Credentials {
                scheme: scheme.to_owned(),
            });
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" if rest.starts_with('/') => Ok(Out::Dir(PathBuf::from(rest))),
            "file" => Err(OutError::RelativeFile { text: shown() }),
            s if BUCKET_SCHEMES.contains(&s) => bucket_url(text, rest),
            "http" | "https" => Err(OutError::Http { text: shown() }),
            other => Err(OutError::Scheme {
                text: shown(),
                scheme: other.to_owned(),
            }),
        }
    }
    /// How the lake is shown: the folder or the URL.
    pub(crate) fn display(&self) -> String {
        match self {
            Out::Dir(d) => d.display().to_string(),
            Out::Url(u) => u.clone(),
        }
    }

    /// The state folder when none is given: `OUT/_runs` for a folder; for a
    /// URL, one under the user's state folder (`$XDG_STATE_HOME`, or
    /// `~/.local/state`) named after the URL, so the same command finds it.
    pub(crate) fn default_state_dir(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<PathBuf, OutError> {
        match self {
            Out::Dir(d) => Ok(d.join("_runs")),
            Out::Url(u) => {
                let base = env("XDG_STATE_HOME")
                    .filter(|s| s.starts_with('/'))
                    .map(PathBuf::from)
                    .or_else(|| {
                        env("HOME")
                            .filter(|s| !s.is_empty())
                            .map(|h| Path::new(&h).join(".local").join("state"))
                    })
                    .ok_or_else(|| OutError::NoHome { url: shown(u) })?;
                Ok(base.join("msgext").join(state_key(u)))
            }
        }
    }

    /// The lake behind this location; an object store's files are staged
    /// under `state_dir` until they are uploaded, and each of its requests,
    /// retries included, takes at most `store_timeout`.
    pub(crate) fn open(
        &self,
        state_dir: &Path,
        store_timeout: std::time::Duration,
    ) -> Result<std::sync::Arc<dyn LakeStore>, WriteError> {
        Ok(match self {
            Out::Dir(d) => std::sync::Arc::new(LocalDir::new(d)),
            Out::Url(u) => std::sync::Arc::new(super::ObjectLake::open(
                u,
                &state_dir.join("_staging"),
                store_timeout,
            )?),
        })
    }
}

/// The schemes of the object stores msgext writes to.
const BUCKET_SCHEMES: [&str; 7] = ["s3", "s3a", "gs", "az", "azure", "abfs", "abfss"];

/// The scheme of a text that starts like a URL (`word:`, RFC 3986's scheme
/// characters, at least two of them so that `C:` stays a drive).
fn url_like_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (scheme.len() >= 2
        && first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
    .then_some(scheme)
}

/// Why `text` (`s3:/lake/x`, `s3:lake/x`, `backup:2026`) is not taken as
/// `--out`, and what was probably meant.
fn not_a_url(text: &str, scheme: &str) -> OutError {
    let rest = shown(&text[scheme.len() + 1..]);
    let rest = rest.trim_start_matches('/');
    let lower = scheme.to_ascii_lowercase();
    let text = shown(text);
    if BUCKET_SCHEMES.contains(&lower.as_str()) {
        OutError::Malformed {
            text,
            meant: format!("{lower}://{rest}"),
        }
    } else if lower == "file" {
        OutError::Malformed {
            text,
            meant: format!("file:///{rest}"),
        }
    } else {
        OutError::UrlLike { text }
    }
}

/// A bucket URL (`rest` is what follows `scheme://`): a bucket, a prefix of
/// plain segments, no query or fragment (which the store would drop or refuse).
fn bucket_url(text: &str, rest: &str) -> Result<Out, OutError> {
    let shown = || shown(text);
    if rest.contains(['?', '#']) {
        return Err(OutError::Query { text: shown() });
    }
    let rest = rest.trim_end_matches('/');
    let mut segments = rest.split('/');
    if segments.next().is_none_or(str::is_empty) {
        return Err(OutError::NoBucket { text: shown() });
    }
    let segments: Vec<&str> = segments.collect();
    if segments.iter().any(|p| p.is_empty()) {
        let scheme = &text[..text.find("://").unwrap_or(0)];
        let fixed: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        return Err(OutError::EmptySegment {
            text: shown(),
            meant: format!("{scheme}://{}", fixed.join("/")),
        });
    }
    if segments.iter().any(|p| *p == "." || *p == "..") {
        return Err(OutError::DotSegment { text: shown() });
    }
    Ok(Out::Url(text.trim_end_matches('/').to_owned()))
}

/// A folder name for a URL: readable, and unique by a hash of the whole URL.
fn state_key(url: &str) -> String {
    use sha2::Digest;
    let readable: String = url
        .replace("://", "-")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    let hash = sha2::Sha256::digest(url.as_bytes());
    let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{readable}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_names_a_folder_or_a_bucket_and_nothing_else() {
        let table: [(&str, Result<Out, &str>); 31] = [
            ("s3:/lake/nightly", Err("did you mean s3://lake/nightly?")),
            ("s3:lake/x", Err("did you mean s3://lake/x?")),
            ("gs:/b/x", Err("did you mean gs://b/x?")),
            ("az:/c/x", Err("did you mean az://c/x?")),
            ("S3:/Lake", Err("did you mean s3://Lake?")),
            ("file:/data/lake", Err("did you mean file:///data/lake?")),
            ("backup:2026", Err("./backup:2026 for a folder")),
            ("./backup:2026", Ok(Out::Dir("./backup:2026".into()))),
            ("C:/lake", Ok(Out::Dir("C:/lake".into()))),
            ("s3://lake//x", Err("did you mean s3://lake/x?")),
            ("s3://lake/x?region=eu", Err("no ?query or #fragment")),
            ("s3://lake/x#frag", Err("no ?query or #fragment")),
            ("s3://lake/x/", Ok(Out::Url("s3://lake/x".into()))),
            ("lake/with:colon", Ok(Out::Dir("lake/with:colon".into()))),
            ("lake", Ok(Out::Dir("lake".into()))),
            ("/data/lake", Ok(Out::Dir("/data/lake".into()))),
            ("file:///data/lake", Ok(Out::Dir("/data/lake".into()))),
            ("file://lake", Err("absolute path")),
            (
                "s3://bucket/prefix/",
                Ok(Out::Url("s3://bucket/prefix".into())),
            ),
            ("gs://bucket", Ok(Out::Url("gs://bucket".into()))),
            ("az://container/p", Ok(Out::Url("az://container/p".into()))),
            ("s3:///prefix", Err("no bucket")),
            ("s3://b/../x", Err("'..'")),
            ("https://b.s3.amazonaws.com/p", Err("AWS_ENDPOINT_URL")),
            ("ftp://host/x", Err("unknown scheme")),
            ("s3://user:SECRET@bucket/x", Err("holds credentials")),
            ("https://u:SECRET@host/x", Err("holds credentials")),
            ("s3://b/p?X-Amz-Signature=SECRET", Err("takes no ?query")),
            ("http://host/p?token=SECRET", Err("AWS_ENDPOINT_URL")),
            ("s3:/b/p?sig=SECRET", Err("did you mean s3://b/p?…")),
            ("ftp://u@host/x#SECRET", Err("unknown scheme")),
        ];
        for (text, want) in table {
            match (Out::parse(text).map_err(|e| e.to_string()), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{text}"),
                (Err(e), Err(w)) => {
                    assert!(e.contains(w), "{text}: {e}");
                    assert!(!e.contains("SECRET"), "{text}: credentials echoed: {e}");
                }
                (got, w) => panic!("{text}: {got:?} vs {w:?}"),
            }
        }
    }

    #[test]
    fn a_bucket_s_state_lives_under_the_user_state_folder_named_after_the_url() {
        let env = |home: Option<&'static str>, xdg: Option<&'static str>| {
            move |k: &str| match k {
                "HOME" => home.map(str::to_owned),
                "XDG_STATE_HOME" => xdg.map(str::to_owned),
                _ => None,
            }
        };
        let out = Out::Url("s3://bucket/lake".into());
        let a = out.default_state_dir(&env(Some("/home/u"), None)).unwrap();
        assert!(
            a.to_string_lossy()
                .starts_with("/home/u/.local/state/msgext/s3-bucket_lake-"),
            "{a:?}"
        );
        let b = out
            .default_state_dir(&env(Some("/home/u"), Some("/var/st")))
            .unwrap();
        assert!(
            b.to_string_lossy()
                .starts_with("/var/st/msgext/s3-bucket_lake-"),
            "{b:?}"
        );
        assert_eq!(a.file_name(), b.file_name(), "keyed by the URL only");
        let other = Out::Url("s3://bucket/lake2".into());
        assert_ne!(
            other
                .default_state_dir(&env(Some("/h"), None))
                .unwrap()
                .file_name(),
            a.file_name()
        );
        assert!(
            out.default_state_dir(&env(None, None))
                .unwrap_err()
                .to_string()
                .contains("--state-dir")
        );
        let dir = Out::Dir("/l".into());
        assert_eq!(
            dir.default_state_dir(&env(None, None)).unwrap(),
            PathBuf::from("/l/_runs")
        );
    }
}
