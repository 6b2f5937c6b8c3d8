//! How many messages are fetched at once. With `--concurrency N` it is N.
//! Without, it follows the observed latency: enough calls in flight to keep
//! the rate limiter busy (calls in flight ≈ rate × latency, with headroom),
//! no more, so memory and the work redone after a crash stay small.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Messages fetched at once at most when the concurrency follows the rate
/// (and with `--rate 0`, where there is no rate to follow).
pub(crate) const DEFAULT_CONCURRENCY: usize = 64;

/// The fewest messages in flight when adapting.
pub(crate) const MIN_AUTO: usize = 8;
/// The most messages in flight when adapting.
pub(crate) const MAX_AUTO: usize = 512;

/// Messages to keep in flight at `rate` calls/s and `latency` per call.
pub(crate) fn target_in_flight(rate: f64, latency: Duration, max: usize) -> usize {
    let needed = (rate * latency.as_secs_f64() * 1.5).ceil();
    let needed = if needed.is_finite() {
        needed as usize
    } else {
        max
    };
    (needed + MIN_AUTO).clamp(MIN_AUTO.min(max), max)
}

/// A resizable limit on messages in flight.
#[derive(Debug)]
pub(crate) struct Concurrency {
    slots: Semaphore,
    target: AtomicUsize,
    /// Permits to retire as they come back (a shrink larger than what was free).
    owed: AtomicUsize,
    max: usize,
    adaptive: bool,
}

impl Concurrency {
    pub(crate) fn fixed(n: usize) -> Self {
        Concurrency {
            slots: Semaphore::new(n),
            target: AtomicUsize::new(n),
            owed: AtomicUsize::new(0),
            max: n,
            adaptive: false,
        }
    }

    pub(crate) fn adaptive(initial: usize, max: usize) -> Self {
        let initial = initial.clamp(1, max);
        Concurrency {
            adaptive: true,
            max,
            ..Concurrency::fixed(initial)
        }
    }

    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive
    }

    /// The most workers that can ever be busy.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Wait for a slot; `None` only if the limit was closed.
    pub(crate) async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    /// Give a slot back (or retire it, if the limit shrank meanwhile).
    pub(crate) fn release(&self, permit: SemaphorePermit<'_>) {
        let retire = self
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1))
            .is_ok();
        if retire {
            permit.forget();
        }
    }

    /// Move the limit to `target` (adaptive only).
    pub(crate) fn set_target(&self, target: usize) {
        if !self.adaptive {
            return;
        }
        let target = target.clamp(1, self.max);
        let current = self.target.swap(target, Ordering::Relaxed);
        if target != current {
            tracing::debug!(target, was = current, "calls in flight");
        }
        if target > current {
            let mut add = target - current;
            // Cancel retirements still owed before adding permits.
            let _ = self
                .owed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| {
                    let cancel = o.min(add);
                    add -= cancel;
                    Some(o - cancel)
                });
            self.slots.add_permits(add);
        } else if target < current {
            let cut = current - target;
            let forgotten = self.slots.forget_permits(cut);
            self.owed.fetch_add(cut - forgotten, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_rate_times_latency() {
        let ms = Duration::from_millis;
        let table = [
            (200.0, ms(150), 512, 53),
            (200.0, ms(10), 512, 11),
            (200.0, ms(0), 512, 8),
            (200.0, ms(2000), 512, 512),
            (150.0, ms(150), 512, 42),
            (200.0, ms(150), 20, 20),
            (f64::INFINITY, ms(150), 64, 64),
        ];
        for (rate, lat, max, want) in table {
            assert_eq!(
                target_in_flight(rate, lat, max),
                want,
                "{rate} {lat:?} {max}"
            );
        }
    }

    #[tokio::test]
    async fn the_limit_grows_and_shrinks_without_losing_permits() {
        let c = Concurrency::adaptive(2, 10);
        let a = c.acquire().await.unwrap();
        let b = c.acquire().await.unwrap();
        assert_eq!(c.slots.available_permits(), 0);
        c.set_target(1); // both busy: one retirement is owed
        c.release(a);
        assert_eq!(c.slots.available_permits(), 0, "retired, not returned");
        c.release(b);
        assert_eq!(c.slots.available_permits(), 1);
        c.set_target(4);
        assert_eq!(c.slots.available_permits(), 4);
        c.set_target(2);
        assert_eq!(c.slots.available_permits(), 2);
        let fixed = Concurrency::fixed(3);
        fixed.set_target(10);
        assert_eq!(fixed.slots.available_permits(), 3, "a fixed limit stays");
    }
}
