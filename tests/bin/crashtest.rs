//! `msgext-crashtest`: the `msgext` binary with crash points switched on,
//! for the crash-recovery tests only (built by `cargo test`, never by
//! `cargo build` or `cargo install`: it needs the `crashtest` feature,
//! which only the tests' dev-dependency turns on).
//!
//! `MSGEXT_FAILPOINT=NAME` or `NAME:N` aborts the process (no destructors,
//! no flushing, as `kill -9` would leave it) the N-th time (default first)
//! it passes the point `NAME`; `panic-NAME` panics there instead (the
//! thread unwinds, the process goes on). `MSGEXT_TEST_<NAME>=BYTES` sets a
//! size (`MSGEXT_TEST_PART_BYTES`: a multipart upload's part).

use std::sync::atomic::{AtomicU64, Ordering};

struct FromEnv {
    target: Option<(String, u64)>,
    passed: AtomicU64,
}

/// Parse `NAME` or `NAME:N`.
fn parse(spec: &str) -> Option<(String, u64)> {
    let spec = spec.trim();
    if spec.is_empty() {
        return None;
    }
    match spec.rsplit_once(':') {
        Some((name, n)) => n.parse().ok().map(|n: u64| (name.to_owned(), n.max(1))),
        None => Some((spec.to_owned(), 1)),
    }
}

impl FromEnv {
    /// Whether this pass of `name` is the configured one (its count).
    fn reached(&self, name: &str) -> Option<u64> {
        match &self.target {
            Some((want, n))
                if want == name && self.passed.fetch_add(1, Ordering::SeqCst) + 1 == *n =>
            {
                Some(*n)
            }
            _ => None,
        }
    }
}

impl msgext::failpoint::Hook for FromEnv {
    fn hit(&self, name: &str) {
        if let Some(n) = self.reached(name) {
            eprintln!("msgext: failpoint {name}:{n}: aborting");
            std::process::abort();
        }
    }

    fn panic_at(&self, name: &str) {
        if self.target.is_some()
            && let Some(n) = self.reached(&format!("panic-{name}"))
        {
            panic!("failpoint panic-{name}:{n}");
        }
    }

    fn size(&self, name: &str) -> Option<usize> {
        std::env::var(format!("MSGEXT_TEST_{name}"))
            .ok()?
            .parse()
            .ok()
    }
}

fn main() -> std::process::ExitCode {
    let target = std::env::var("MSGEXT_FAILPOINT")
        .ok()
        .and_then(|s| parse(&s));
    msgext::failpoint::install(Box::new(FromEnv {
        target,
        passed: AtomicU64::new(0),
    }));
    msgext::app::main()
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
