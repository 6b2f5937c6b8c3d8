//! The one rate limiter all workers share, adaptive (AIMD): it hands out call
//! slots at `rate` per second, first come first served (each caller reserves
//! the next free slot and sleeps until it; nothing polls). When the API
//! answers with a quota code it cuts the rate to what the API accepted over
//! the last second, holds every call back briefly, and re-schedules slots
//! already handed out; while no quota code comes back it climbs by a small
//! step each second up to the configured `--rate`. So a `--rate` above the
//! real quota costs a few quota errors at the start, not a share of all calls.
//!
//! At the API's quota the calls start on a grid (`TICK`, 20 ms): the calls
//! whose even-spaced times fall within one tick all start at its first
//! instant, so that no second holds more calls than the rate. The export's
//! runtime thread then sleeps from one grid instant to the next (`Pacer`)
//! rather than waking for every answer and every slot: the answers that
//! came in between are read together, and the calls due start together.
//! This costs an answer at most one tick (against 150 ms of API latency;
//! the calls in flight follow the latency seen, tick included) and saves
//! most of the wake-ups, which were most of the CPU at the quota (`cargo
//! bench --bench throughput -- quota`: 10 ms ticks took CPU a call from
//! 0.25–0.36 ms to 0.23–0.30 ms, 20 ms to 0.16–0.21 ms, 50 ms to 0.17 ms).
//!
//! `RateState` is the pure decision part (times are durations since the
//! limiter's start); `Limiter` adds the clock (`tokio::time`, so tests can
//! pause it) and the lock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The grid calls start on, and the pacer's step. It divides a second, so
/// that every second holds the same number of grid instants.
pub const TICK: Duration = Duration::from_millis(20);
/// Below this rate there is less than one call a tick: no grid, no pacing
/// (sleeping to the grid would then add wake-ups, not save them).
pub const PACE_FROM_RATE: u32 = (1000 / TICK.as_millis()) as u32;
/// The pacer wakes this long after a grid instant, so that tokio's timer
/// wheel (1 ms resolution, deadlines rounded up) sees the calls due at the
/// instant as due.
const PARK_OFFSET: Duration = Duration::from_millis(1);

/// After a quota answer, no call starts for this long.
pub const HOLD_AFTER_QUOTA: Duration = Duration::from_millis(100);
/// Quota answers closer together than this count as one event (one cut).
pub const CUT_SPACING: Duration = Duration::from_millis(250);
/// The window over which accepted calls are counted.
const WINDOW: Duration = Duration::from_secs(1);

/// The limiter's state, without a clock.
#[derive(Debug, Clone)]
pub struct RateState {
    /// Calls start on multiples of this, if set.
    grid: Option<Duration>,
    ceiling: f64,
    floor: f64,
    rate: f64,
    next: Duration,
    hold_until: Duration,
    last_cut: Option<Duration>,
    last_change: Duration,
    generation: u64,
    accepted: VecDeque<Duration>,
}

impl RateState {
    /// Calls at up to `ceiling` a second, each at its own time.
    pub fn new(ceiling: u32) -> Self {
        let ceiling = f64::from(ceiling.max(1));
        RateState {
            grid: None,
            ceiling,
            floor: (ceiling / 100.0).max(1.0),
            rate: ceiling,
            next: Duration::ZERO,
            hold_until: Duration::ZERO,
            last_cut: None,
            last_change: Duration::ZERO,
            generation: 0,
            accepted: VecDeque::new(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Calls start on multiples of `tick` (if given).
    pub fn with_grid(mut self, tick: Option<Duration>) -> Self {
        self.grid = tick;
        self
    }

    /// The grid, if calls start on one.
    pub fn grid(&self) -> Option<Duration> {
        self.grid
    }

    /// Reserve the next slot at or after `now`; returns when it starts and
    /// the generation it belongs to (a cut invalidates older slots). Slots
    /// are `1/rate` apart; on a grid, a slot starts at the grid instant at
    /// or before it (but never within a hold).
    pub fn reserve(&mut self, now: Duration) -> (Duration, u64) {
        let slot = self.next.max(now).max(self.hold_until);
        self.next = slot + Duration::from_secs_f64(1.0 / self.rate);
        let start = match self.grid {
            Some(tick) => grid_floor(slot, tick).max(self.hold_until),
            None => slot,
        };
        (start, self.generation)
    }

    /// The API accepted a call (any answer but a quota code).
    pub fn on_accepted(&mut self, now: Duration) {
        self.accepted.push_back(now);
        self.forget_before(now);
        if self.rate < self.ceiling && now.saturating_sub(self.last_change) >= WINDOW {
            self.rate = (self.rate + (self.ceiling / 50.0).max(1.0)).min(self.ceiling);
            self.last_change = now;
        }
    }

    /// The API answered with a quota code.
    pub fn on_quota(&mut self, now: Duration) {
        self.forget_before(now);
        self.hold_until = self.hold_until.max(now + HOLD_AFTER_QUOTA);
        self.next = self.hold_until;
        self.generation += 1;
        if self
            .last_cut
            .is_some_and(|t| now.saturating_sub(t) < CUT_SPACING)
        {
            return;
        }
        let accepted_per_s = self.accepted.len() as f64;
        let target = accepted_per_s.min(self.rate) * 0.97;
        self.rate = target.max(self.rate * 0.5).max(self.floor);
        self.last_cut = Some(now);
        self.last_change = now;
    }

    fn forget_before(&mut self, now: Duration) {
        while self
            .accepted
            .front()
            .is_some_and(|&t| now.saturating_sub(t) > WINDOW)
        {
            self.accepted.pop_front();
        }
    }
}

/// The grid for a `--rate`: `TICK` from `PACE_FROM_RATE` calls a second.
fn grid_for(rate: u32) -> Option<Duration> {
    (rate >= PACE_FROM_RATE).then_some(TICK)
}

/// The last multiple of `tick` at or before `t`.
fn grid_floor(t: Duration, tick: Duration) -> Duration {
    let tick_ns = tick.as_nanos().max(1);
    let n = t.as_nanos() / tick_ns;
    Duration::from_nanos(u64::try_from(n * tick_ns).unwrap_or(u64::MAX))
}

/// How long to sleep at `since_epoch` to wake `PARK_OFFSET` after the next
/// grid instant that is still ahead.
fn until_next_tick(since_epoch: Duration, tick: Duration) -> Duration {
    let next = match since_epoch.checked_sub(PARK_OFFSET) {
        Some(passed) => grid_floor(passed, tick) + tick + PARK_OFFSET,
        None => PARK_OFFSET,
    };
    next.saturating_sub(since_epoch)
}

/// Where the grid is: its first instant and its step.
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    pub epoch: std::time::Instant,
    pub tick: Duration,
}

/// Makes the runtime thread that runs the fetch workers sleep from one grid
/// instant to the next before it waits for events (tokio's
/// `on_thread_park`), while a grid is set: events that come in between
/// wait in the kernel and are read together. Without a grid, or with no
/// hook installed, it does nothing.
#[derive(Debug, Clone, Default)]
pub struct Pacer(Arc<PacerState>);

#[derive(Debug, Default)]
pub struct PacerState {
    grid: Mutex<Option<Grid>>,
    /// The first paced park was logged.
    told: std::sync::atomic::AtomicBool,
}

impl Pacer {
    pub fn set(&self, grid: Option<Grid>) {
        *self.0.grid.lock().unwrap_or_else(|p| p.into_inner()) = grid;
    }

    /// The hook: called by a runtime thread with nothing left to run.
    pub fn before_park(&self) {
        let grid = *self.0.grid.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = grid {
            if !self.0.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::debug!(
                    tick_ms = g.tick.as_millis() as u64,
                    "the fetch thread is paced on the rate limiter's grid"
                );
            }
            std::thread::sleep(until_next_tick(g.epoch.elapsed(), g.tick));
        }
    }
}

/// The shared, adaptive limiter.
#[derive(Debug)]
pub struct Limiter {
    epoch: Instant,
    state: Mutex<RateState>,
}

impl Limiter {
    /// `None` when `rate` is 0 (no limit).
    pub fn new(rate: u32) -> Option<Self> {
        (rate > 0).then(|| Limiter {
            epoch: Instant::now(),
            state: Mutex::new(RateState::new(rate).with_grid(grid_for(rate))),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a slot. Slots reserved before a cut are re-reserved.
    pub async fn acquire(&self) {
        loop {
            let (slot, generation) = self.lock().reserve(self.epoch.elapsed());
            tokio::time::sleep_until(self.epoch + slot).await;
            if self.lock().generation() == generation {
                return;
            }
        }
    }

    pub fn on_accepted(&self) {
        let now = self.epoch.elapsed();
        let mut state = self.lock();
        let was = state.rate();
        state.on_accepted(now);
        if state.rate() != was {
            tracing::debug!(rate = state.rate(), was, "rate limit raised");
        }
    }

    pub fn on_quota(&self) {
        let now = self.epoch.elapsed();
        let mut state = self.lock();
        let was = state.rate();
        state.on_quota(now);
        if state.rate() != was {
            tracing::info!(
                rate = state.rate(),
                was,
                "rate limit lowered after a quota answer"
            );
        }
    }

    /// The rate in force, calls per second.
    pub fn rate(&self) -> f64 {
        self.lock().rate()
    }

    /// The grid calls start on, if any, for the `Pacer`.
    pub fn grid(&self) -> Option<Grid> {
        self.lock().grid().map(|tick| Grid {
            epoch: self.epoch.into_std(),
            tick,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slots_are_evenly_spaced_and_first_come_first_served() {
        let mut s = RateState::new(200);
        let slots: Vec<_> = (0..5).map(|_| s.reserve(Duration::ZERO).0).collect();
        assert_eq!(slots, [ms(0), ms(5), ms(10), ms(15), ms(20)]);
        // A caller arriving after a quiet spell gets a slot at once, with no saved-up burst.
        assert_eq!(s.reserve(ms(1000)).0, ms(1000));
        assert_eq!(s.reserve(ms(1000)).0, ms(1005));
    }

    #[test]
    fn a_quota_answer_cuts_to_what_the_api_accepted_and_holds_calls() {
        let mut s = RateState::new(300);
        // 150 calls accepted in the first half second, then a quota answer.
        for i in 0..150 {
            s.on_accepted(ms(i * 500 / 150));
        }
        let g = s.generation();
        s.on_quota(ms(500));
        assert!(
            (s.rate() - 150.0).abs() < 1e-9,
            "cut to max(half, 0.97 x accepted): {}",
            s.rate()
        );
        assert_eq!(
            s.generation(),
            g + 1,
            "slots reserved before the cut are void"
        );
        assert_eq!(s.reserve(ms(500)).0, ms(600), "calls are held back");
        // More quota answers right after the cut: held longer, not cut again.
        s.on_quota(ms(550));
        assert!((s.rate() - 150.0).abs() < 1e-9);
        // A quota answer later, with 150 accepted in the last second, cuts to 0.97 x 150.
        for i in 0..150 {
            s.on_accepted(ms(700 + i * 6));
        }
        s.on_quota(ms(1600));
        assert!((s.rate() - 145.5).abs() < 1e-9, "{}", s.rate());
    }

    #[test]
    fn the_rate_climbs_back_slowly_and_never_passes_the_ceiling() {
        let mut s = RateState::new(200);
        s.on_quota(ms(0));
        let cut = s.rate();
        assert_eq!(cut, 100.0, "no accepted calls yet: halved");
        let mut rates = Vec::new();
        for sec in 1..=60 {
            s.on_accepted(Duration::from_secs(sec));
            rates.push(s.rate());
        }
        assert_eq!(rates[0], 104.0, "+ceiling/50 a second");
        assert!(rates.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*rates.last().unwrap(), 200.0);
    }

    #[test]
    fn the_rate_never_falls_below_the_floor() {
        let mut s = RateState::new(100);
        for i in 0..50 {
            s.on_quota(Duration::from_secs(i));
        }
        assert_eq!(s.rate(), 1.0);
    }

    /// Starts of `n` calls reserved at once, in ms since the start.
    fn starts(s: &mut RateState, n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| s.reserve(Duration::ZERO).0.as_millis() as u64)
            .collect()
    }

    #[test]
    fn on_a_grid_calls_start_together_and_no_second_holds_more_than_the_rate() {
        // (rate, the first starts), on the 20 ms grid
        let cases: [(u32, &[u64]); 4] = [
            (200, &[0, 0, 0, 0, 20, 20, 20, 20]),
            (400, &[0, 0, 0, 0, 0, 0, 0, 0]),
            (150, &[0, 0, 0, 20, 20, 20, 40, 40]),
            (50, &[0, 20, 40, 60, 80, 100, 120, 140]),
        ];
        assert_eq!(TICK, ms(20));
        for (rate, first) in cases {
            let mut s = RateState::new(rate).with_grid(grid_for(rate));
            let all = starts(&mut s, rate as usize * 5);
            assert_eq!(&all[..first.len()], first, "rate {rate}");
            assert!(all.iter().all(|t| t % 20 == 0), "on the grid: {rate}");
            // Every window of one second, wherever it begins (1 ms steps),
            // holds at most `rate` starts.
            for from in 0..4000 {
                let n = all
                    .iter()
                    .filter(|&&t| t >= from && t < from + 1000)
                    .count();
                assert!(n <= rate as usize, "rate {rate}: {n} in [{from}, +1 s)");
            }
        }
        // Below PACE_FROM_RATE, no grid.
        assert_eq!(grid_for(49), None);
        let mut s = RateState::new(25).with_grid(grid_for(25));
        assert_eq!(starts(&mut s, 3), [0, 40, 80]);
    }

    #[test]
    fn on_a_grid_no_call_starts_within_a_hold() {
        let mut s = RateState::new(200).with_grid(Some(TICK));
        s.on_quota(ms(503));
        assert_eq!(s.rate(), 100.0, "cut: slots 10 ms apart");
        assert_eq!(s.reserve(ms(503)).0, ms(603), "the hold wins over the grid");
        assert_eq!(s.reserve(ms(503)).0, ms(603), "613 is in the tick of 600");
        assert_eq!(
            s.reserve(ms(503)).0,
            ms(620),
            "623 is not: back on the grid"
        );
        assert_eq!(s.reserve(ms(503)).0, ms(620));
    }

    #[test]
    fn the_pacer_wakes_just_after_the_next_grid_instant() {
        // (time since the grid's epoch, sleep), tick 20 ms, offset 1 ms
        let cases = [
            (0, 1),
            (1, 20), // exactly at the offset: the next one
            (2, 19),
            (15, 6),
            (20, 1),
            (21, 20),
            (1234, 7),
        ];
        for (now, sleep) in cases {
            assert_eq!(until_next_tick(ms(now), TICK), ms(sleep), "at {now} ms");
        }
        assert_eq!(grid_floor(ms(39), TICK), ms(20));
        assert_eq!(grid_floor(Duration::from_micros(40_001), TICK), ms(40));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_on_tokio_time_and_paces_calls() {
        let l = std::sync::Arc::new(Limiter::new(100).unwrap());
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap() - start);
        }
        times.sort();
        // 100 a second on the 20 ms grid: two calls at each tick.
        let want: Vec<Duration> = (0..10).map(|i| ms(i / 2 * 20)).collect();
        assert_eq!(times, want);
        assert_eq!(l.grid().map(|g| g.tick), Some(TICK));
        // Under PACE_FROM_RATE: every call at its own time, no grid.
        let slow = std::sync::Arc::new(Limiter::new(10).unwrap());
        assert!(slow.grid().is_none());
        let t0 = Instant::now();
        slow.acquire().await;
        slow.acquire().await;
        assert_eq!(Instant::now() - t0, ms(100));
        assert!(Limiter::new(0).is_none());
    }
}
