//! Crash points for the crash-recovery tests: when `MSGEXT_FAILPOINT` is
//! `NAME` or `NAME:N`, the process aborts (no destructors, no flushing, as
//! `kill -9` would leave it) the N-th time (default first) it passes `NAME`.
//! Unset, a check is one atomic load. Compiled in only with the `failpoints`
//! feature (which the tests turn on): in the builds users run, every point is
//! an empty function and the variable is ignored.

#[cfg(feature = "failpoints")]
use std::sync::OnceLock;
#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "failpoints")]
static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
#[cfg(feature = "failpoints")]
static PASSED: AtomicU64 = AtomicU64::new(0);

/// Parse `NAME` or `NAME:N`.
pub fn parse(spec: &str) -> Option<(String, u64)> {
    let spec = spec.trim();
    if spec.is_empty() {
        return None;
    }
    match spec.rsplit_once(':') {
        Some((name, n)) => n.parse().ok().map(|n: u64| (name.to_owned(), n.max(1))),
        None => Some((spec.to_owned(), 1)),
    }
}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Without the `failpoints` feature: nothing.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn panic_at(_name: &str) {}

/// Whether this pass of `name` is the configured one.
#[cfg(feature = "failpoints")]
fn reached(name: &str) -> Option<u64> {
    let target = TARGET.get_or_init(|| {
        std::env::var("MSGEXT_FAILPOINT")
            .ok()
            .and_then(|s| parse(&s))
    });
    match target {
        Some((want, n)) if want == name && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *n => {
            Some(*n)
        }
        _ => None,
    }
}

/// Abort here if this is the configured crash point.
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    if let Some(n) = reached(name) {
        eprintln!("msgext: failpoint {name}:{n}: aborting");
        std::process::abort();
    }
}

/// Panic here (the thread or task unwinds, the process goes on) if this is
/// the configured point `panic-NAME`: a bug anywhere must end as a failed
/// run, never as a silent loss.
#[cfg(feature = "failpoints")]
pub fn panic_at(name: &str) {
    if TARGET.get().is_some_and(Option::is_none) {
        return;
    }
    if let Some(n) = reached(&format!("panic-{name}")) {
        panic!("failpoint panic-{name}:{n}");
    }
}

/// A size the tests shrink: `MSGEXT_TEST_<NAME>` (bytes) when set, so that
/// small files take the paths large ones take. Without the `failpoints`
/// feature, always `default`.
pub fn size(name: &str, default: usize) -> usize {
    #[cfg(feature = "failpoints")]
    if let Some(n) = std::env::var(format!("MSGEXT_TEST_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    let _ = name;
    default
}

#[cfg(test)]
mod tests {
    #[test]
    fn specs() {
        assert_eq!(super::parse("sealed"), Some(("sealed".into(), 1)));
        assert_eq!(super::parse("settled:7"), Some(("settled".into(), 7)));
        assert_eq!(super::parse("settled:x"), None);
        assert_eq!(super::parse(""), None);
    }
}
