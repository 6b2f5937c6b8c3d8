//! Retry policy as pure functions: `classify` turns what one attempt produced
//! (an API `ErrorCode` or a transport failure) into an `Action`, and `Backoff`
//! computes capped exponential delays with full jitter.

use crate::api::client::CallError;
pub(crate) use crate::codes::Action;
use std::time::Duration;

/// What to do after an attempt that got no usable answer; an answer's
/// `ErrorCode` is read by `classify_code` (and its kind's own reading).
pub(crate) fn classify(e: &CallError) -> Action {
    {
        match e {
            CallError::Timeout
            | CallError::Connect(_)
            | CallError::Network(_)
            | CallError::Decode(_) => Action::Retry,
            CallError::Http { status: 429, .. } => Action::RateLimited,
            CallError::Http { status, .. } if *status == 408 || (500..600).contains(status) => {
                Action::Retry
            }
            // The API answers 200 for every outcome: any other status means the
            // endpoint is not the API (wrong --endpoint, a proxy refusing us).
            CallError::Http { .. } => Action::FailRun,
        }
    }
}

/// Capped exponential backoff with full jitter: the n-th retry waits a uniform
/// random time in `[0, min(cap, base * 2^(n-1)))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// `retry` counts from 1; `unit` is a uniform random number in `[0, 1)`.
    pub(crate) fn delay(&self, retry: u32, unit: f64) -> Duration {
        let exp = retry.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The largest delay the n-th retry can get.
    #[cfg(test)]
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        self.delay(retry, 1.0)
    }
}

/// The longest a server's `Retry-After` is honoured: a proxy asking for an
/// hour must not stall a run for an hour.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The wait before the n-th retry: the backoff's jittered delay, but never
/// less than what the server asked for in `Retry-After`; and never more than
/// `max_wait` (at most `MAX_RETRY_AFTER`, and no longer than the circuit
/// breaker's patience: see `RetryPolicy::max_wait`).
pub(crate) fn retry_delay(
    backoff: &Backoff,
    retry: u32,
    unit: f64,
    retry_after: Option<Duration>,
    max_wait: Duration,
) -> Duration {
    backoff
        .delay(retry, unit)
        .max(retry_after.unwrap_or(Duration::ZERO))
        .min(max_wait.min(MAX_RETRY_AFTER))
}

/// How hard to try one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub transient: Backoff,
    pub rate_limited: Backoff,
    /// No single wait is longer than this (capped at `MAX_RETRY_AFTER`); the
    /// export sets it to at most the circuit breaker's `--give-up-after`.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            transient: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(10),
            },
            rate_limited: Backoff {
                base: Duration::from_millis(500),
                cap: Duration::from_secs(30),
            },
            max_wait: MAX_RETRY_AFTER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_the_api_table_is_classified() {
        use Action::*;
        let mut table: Vec<(i64, Action)> = vec![
            (0, Success),
            (10002, Retry),
            (60008, Retry),
            (60013, Retry),
            (60014, Retry),
            (60007, RateLimited),
            (60011, RateLimited),
            (60018, RateLimited),
            (60019, RateLimited),
            (10006, RateLimited),
            (70001, RenewSignature),
            (10004, FailMessage),
            (23004, NotFound),
            (10008, FailRun),
            (60009, FailRun),
            (60010, FailRun),
            (60012, FailRun),
            (60020, FailRun),
            (60021, FailRun),
            (70050, FailRun),
            (70051, FailRun),
            (12345, FailMessage),
        ];
        table.extend((60002..=60006).map(|c| (c, FailRun)));
        table.extend((60015..=60017).map(|c| (c, FailRun)));
        table.extend((70002..=70020).map(|c| (c, FailRun)));
        for (code, want) in table {
            assert_eq!(crate::codes::classify_code(code), want, "code {code}");
        }
    }

    #[test]
    fn transport_failures_are_classified() {
        use Action::*;
        let http = |status| CallError::Http {
            status,
            retry_after: None,
        };
        let table = [
            (CallError::Timeout, Retry),
            (CallError::Connect("refused".into()), Retry),
            (CallError::Network("reset by peer".into()), Retry),
            (CallError::Decode("<html>".into()), Retry),
            (http(500), Retry),
            (http(502), Retry),
            (http(503), Retry),
            (http(504), Retry),
            (http(408), Retry),
            (http(429), RateLimited),
            (http(404), FailRun),
            (http(403), FailRun),
        ];
        for (e, want) in table {
            assert_eq!(classify(&e), want, "{e:?}");
        }
    }

    #[test]
    fn retry_after_is_a_floor_under_the_jittered_backoff() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        };
        let s = Duration::from_secs;
        let table = [
            (1, 0.5, None, s(60), Duration::from_millis(50)),
            (1, 0.5, Some(s(3)), s(60), s(3)),
            (8, 0.99, Some(s(1)), s(60), Duration::from_millis(9900)),
            (2, 0.0, Some(Duration::ZERO), s(60), Duration::ZERO),
            // A proxy's Retry-After of an hour is capped at a minute...
            (1, 0.5, Some(s(3600)), s(600), MAX_RETRY_AFTER),
            // ...and at the circuit breaker's patience when that is shorter.
            (1, 0.5, Some(s(3600)), s(5), s(5)),
            (8, 0.99, None, s(2), s(2)),
        ];
        for (retry, unit, after, max_wait, want) in table {
            assert_eq!(
                retry_delay(&b, retry, unit, after, max_wait),
                want,
                "{retry} {unit} {after:?} {max_wait:?}"
            );
        }
    }

    #[test]
    fn backoff_is_capped_exponential_with_full_jitter() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        let table = [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1600),
            (6, 2000),
            (40, 2000),
        ];
        for (retry, ceiling_ms) in table {
            assert_eq!(
                b.ceiling(retry),
                Duration::from_millis(ceiling_ms),
                "retry {retry}"
            );
            assert_eq!(b.delay(retry, 0.0), Duration::ZERO);
            assert_eq!(b.delay(retry, 0.5), Duration::from_millis(ceiling_ms / 2));
        }
    }
}
