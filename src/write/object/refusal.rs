//! What a bucket's refusals mean to the user: missing credentials, plain
//! HTTP, a store without conditional writes, a timeout; each said with the
//! setting to fix, and never with a secret of the environment (`redact`).

/// Whether a request failed because the store did not answer in time (the
/// error or one of its causes says so), rather than by an answer.
pub(super) fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if let Some(r) = c.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Where a cloud client looks for an instance's credentials when the
/// environment names none (AWS's and GCP's metadata services).
const METADATA_ADDRESS: &str = "169.254.169.254";

/// What to say when a store's error `text` shows that the client found no
/// credential in the environment and asked the instance metadata service.
pub(super) fn no_credentials(url: &str, text: &str) -> Option<String> {
    text.contains(METADATA_ADDRESS)
        .then(|| format!("no credentials were found: {}", credential_variables(url)))
}

/// The credentials a store URL's client reads, for messages.
pub(super) fn credential_variables(url: &str) -> &'static str {
    match url.split("://").next().unwrap_or("") {
        "gs" => {
            "a gs:// URL reads GOOGLE_APPLICATION_CREDENTIALS (a service account key file), or this \
                 machine's service account"
        }
        "az" | "azure" | "abfs" | "abfss" => {
            "an az:// URL reads AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY (or \
             AZURE_STORAGE_SAS_KEY), or this machine's managed identity"
        }
        _ => {
            "an s3:// URL reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (with AWS_SESSION_TOKEN \
             for temporary ones), AWS_WEB_IDENTITY_TOKEN_FILE, or this machine's instance role"
        }
    }
}

/// A plain-http S3 endpoint that the client would refuse with a bare
/// "builder error": say which setting allows it.
pub(super) fn plain_http_refused(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let endpoint = env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT"))?;
    let allowed = env("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    (endpoint.to_ascii_lowercase().starts_with("http://") && !allowed).then(|| {
        format!(
            "AWS_ENDPOINT_URL {endpoint} is plain http://: set AWS_ALLOW_HTTP=true to allow it, \
             or give an https:// endpoint"
        )
    })
}

/// Why a store refused a request, as far as the user can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Denied,
    NoBucket,
    NotFound,
    /// No conditional create (`If-None-Match: *`): run claims and Delta
    /// commits need one.
    NoConditionalWrites,
}

impl Refusal {
    /// From the error's kind, or, where object_store does not map it (its
    /// listings give a generic error), from the status and code the store answered.
    pub(super) fn of(e: &object_store::Error) -> Option<Refusal> {
        use object_store::Error as E;
        match e {
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => Some(Refusal::Denied),
            E::NotImplemented { .. } | E::NotSupported { .. } => Some(Refusal::NoConditionalWrites),
            _ => Self::from_text(&e.to_string()),
        }
    }

    fn from_text(text: &str) -> Option<Refusal> {
        const DENIED: [&str; 7] = [
            "403 Forbidden",
            "401 Unauthorized",
            "AccessDenied",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AuthenticationFailed",
            "ExpiredToken",
        ];
        if DENIED.iter().any(|d| text.contains(d)) {
            Some(Refusal::Denied)
        } else if text.contains("NoSuchBucket")
            || text.contains("ContainerNotFound")
            || text.contains("The specified bucket does not exist")
        {
            Some(Refusal::NoBucket)
        } else if text.contains("404 Not Found") || text.contains("not found") {
            Some(Refusal::NotFound)
        } else if text.contains("501 Not Implemented") || text.contains("<Code>NotImplemented<") {
            Some(Refusal::NoConditionalWrites)
        } else {
            None
        }
    }
}

/// A store's error text as msgext tells it, for errors that come through
/// another client of the same store (the Delta kernel's): what the store
/// refused, then the text with every credential of the environment out.
pub(crate) fn explain(text: &str) -> String {
    let hint = match Refusal::from_text(text) {
        Some(Refusal::NoConditionalWrites) => NO_CONDITIONAL_WRITES,
        Some(Refusal::Denied) => "access denied; check the credentials and the bucket's policy: ",
        _ => "",
    };
    redact(&format!("{hint}{text}"))
}

pub(super) const NO_CONDITIONAL_WRITES: &str = "the store does not create an object only if absent (a PUT \
     with If-None-Match: *), which msgext needs for its run claims and Delta commits; use a store \
     or a setting that supports conditional writes: ";

/// `text` with the value of every credential variable set in the
/// environment cut out (a store's error body may quote the access key id).
pub(super) fn redact(text: &str) -> String {
    redact_with(text, &|var| std::env::var(var).ok())
}

/// `redact` with the environment given: a pure function, for the tests.
pub(super) fn redact_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    const SECRETS: [&str; 8] = [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_CLIENT_SECRET",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
    ];
    let mut out = text.to_owned();
    for var in SECRETS {
        if let Some(v) = env(var)
            && v.len() >= 4
        {
            out = out.replace(&v, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_apart_by_what_the_store_answered() {
        let table = [
            (
                "Server returned non-2xx status code: 403 Forbidden: <Code>SignatureDoesNotMatch</Code>",
                Some(Refusal::Denied),
            ),
            (
                "<Error><Code>InvalidAccessKeyId</Code></Error>",
                Some(Refusal::Denied),
            ),
            ("401 Unauthorized", Some(Refusal::Denied)),
            ("Azure: AuthenticationFailed", Some(Refusal::Denied)),
            (
                "404 Not Found: <Error><Code>NoSuchBucket</Code></Error>",
                Some(Refusal::NoBucket),
            ),
            ("ContainerNotFound", Some(Refusal::NoBucket)),
            (
                "Object at location x not found: 404 Not Found",
                Some(Refusal::NotFound),
            ),
            (
                "501 Not Implemented: <Code>NotImplemented</Code>A header you provided implies functionality that is not implemented",
                Some(Refusal::NoConditionalWrites),
            ),
            ("error sending request: connection refused", None),
            ("500 Internal Server Error", None),
        ];
        for (text, want) in table {
            assert_eq!(Refusal::from_text(text), want, "{text}");
        }
    }

    #[test]
    fn credentials_never_reach_a_message() {
        let env = |var: &str| match var {
            "AWS_ACCESS_KEY_ID" => Some("AKIAEXAMPLE".to_owned()),
            "AZURE_CLIENT_SECRET" => Some("s3cr3t-value-9".to_owned()),
            "AWS_SESSION_TOKEN" => Some("abc".to_owned()), // too short to cut
            _ => None,
        };
        let table = [
            ("body: s3cr3t-value-9 x", "body: <redacted> x"),
            (
                "<AWSAccessKeyId>AKIAEXAMPLE</AWSAccessKeyId>",
                "<AWSAccessKeyId><redacted></AWSAccessKeyId>",
            ),
            ("abc stays", "abc stays"),
            ("nothing secret", "nothing secret"),
        ];
        for (text, want) in table {
            assert_eq!(redact_with(text, &env), want, "{text}");
        }
    }
}
