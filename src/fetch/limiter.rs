//! The one rate limiter all workers share, adaptive (AIMD): it hands out call
//! slots at `rate` per second, first come first served (each caller reserves
//! the next free slot and sleeps until it; nothing polls). When the API
//! answers with a quota code it cuts the rate to what the API accepted over
//! the last second, holds every call back briefly, and re-schedules slots
//! already handed out; while no quota code comes back it climbs by a small
//! step each second up to the configured `--rate`. So a `--rate` above the
//! real quota costs a few quota errors at the start, not a share of all calls.
//! A quota answer while the API takes the full rate on the grid is another
//! thing: the calls arrive at the edge of the API's second, and the grid
//! moves half a tick away from it instead (`Verdict::Shifted`).
//!
//! At the API's quota the calls start on a grid (`TICK`, 20 ms): the calls
//! whose even-spaced times fall within one tick all start at its first
//! instant, so that no second holds more calls than the rate, and the
//! runtime wakes once a tick to start them rather than once a call.
//!
//! `RateState` is the pure decision part (times are durations since the
//! limiter's start); `Limiter` adds the clock (`tokio::time`, so tests can
//! pause it) and the lock.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The grid calls start on. It divides a second, so
/// that every second holds the same number of grid instants.
pub(crate) const TICK: Duration = Duration::from_millis(20);
/// Below this rate there is less than one call a tick: no grid.
pub(crate) const GRID_FROM_RATE: u32 = (1000 / TICK.as_millis()) as u32;
/// After a quota answer, no call starts for this long.
pub(crate) const HOLD_AFTER_QUOTA: Duration = Duration::from_millis(100);
/// Quota answers closer together than this count as one event (one cut).
pub(crate) const CUT_SPACING: Duration = Duration::from_millis(250);
/// The window over which accepted calls are counted.
const WINDOW: Duration = Duration::from_secs(1);
/// A quota answer at the full `--rate` while the API took at least this
/// share of it over the last second is taken for the calls' arrival at the
/// edge of the API's one-second window, not for a lower quota (see
/// `Verdict::Shifted`). Below the full rate (climbing back after a cut, or
/// a `--rate` above the quota) a quota answer always cuts.
const EDGE_ACCEPTED_SHARE: f64 = 0.97;
/// A grid shift that did not stop the quota answers is not tried again
/// within this long: the next answer cuts the rate.
const SHIFT_SPACING: Duration = Duration::from_secs(5);

/// What a quota answer did to the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The rate was cut to what the API accepted, and calls are held.
    Cut,
    /// Part of a quota event already answered by a cut: held longer.
    Held,
    /// At the full rate, on a grid: the calls were arriving at the API's
    /// window edge, where a millisecond of jitter puts a tick's calls in the
    /// wrong second (the simulator's fixed windows gave such runs 3–13
    /// quota answers and 95–96% of the quota, against 98% without). The
    /// grid moves by half a tick, away from the edge; the rate stays.
    Shifted,
    /// The rest of the tick whose answer moved the grid: nothing to do.
    SameBurst,
}

/// The limiter's state, without a clock.
#[derive(Debug, Clone)]
pub(crate) struct RateState {
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
    /// Calls start on `phase` + multiples of the tick (`phase` < tick).
    phase: Duration,
    last_shift: Option<Duration>,
}

impl RateState {
    /// Calls at up to `ceiling` a second, each at its own time.
    pub(crate) fn new(ceiling: u32) -> Self {
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
            phase: Duration::ZERO,
            last_shift: None,
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Calls start on multiples of `tick` (if given).
    pub(crate) fn with_grid(mut self, tick: Option<Duration>) -> Self {
        self.grid = tick;
        self
    }

    /// Where on the grid's tick calls start (0 until a `Verdict::Shifted`).
    pub(crate) fn phase(&self) -> Duration {
        self.phase
    }

    /// Reserve the next slot at or after `now`; returns when it starts and
    /// the generation it belongs to (a cut invalidates older slots). Slots
    /// are `1/rate` apart; on a grid, a slot starts at the grid instant at
    /// or before it (but never within a hold).
    pub(crate) fn reserve(&mut self, now: Duration) -> (Duration, u64) {
        let slot = self.next.max(now).max(self.hold_until);
        self.next = slot + Duration::from_secs_f64(1.0 / self.rate);
        let start = match self.grid {
            Some(tick) => grid_floor_at(slot, tick, self.phase).max(self.hold_until),
            None => slot,
        };
        (start, self.generation)
    }

    /// The API accepted a call (any answer but a quota code).
    pub(crate) fn on_accepted(&mut self, now: Duration) {
        self.accepted.push_back(now);
        self.forget_before(now);
        if self.rate < self.ceiling && now.saturating_sub(self.last_change) >= WINDOW {
            self.rate = (self.rate + (self.ceiling / 50.0).max(1.0)).min(self.ceiling);
            self.last_change = now;
        }
    }

    /// The API answered with a quota code.
    pub(crate) fn on_quota(&mut self, now: Duration) -> Verdict {
        self.forget_before(now);
        let since = |t: Option<Duration>| t.map(|t| now.saturating_sub(t));
        if since(self.last_shift).is_some_and(|d| d < CUT_SPACING) {
            return Verdict::SameBurst;
        }
        if let Some(tick) = self.grid
            && self.rate >= self.ceiling
            && self.accepted.len() as f64 >= EDGE_ACCEPTED_SHARE * self.rate
            && since(self.last_shift).is_none_or(|d| d >= SHIFT_SPACING)
            && since(self.last_cut).is_none_or(|d| d >= CUT_SPACING)
        {
            let half = tick / 2;
            self.phase = if self.phase + half >= tick {
                self.phase + half - tick
            } else {
                self.phase + half
            };
            // Slots handed out on the old phase are taken again on the new.
            self.generation += 1;
            self.next = self.next.min(now);
            self.last_shift = Some(now);
            return Verdict::Shifted;
        }
        self.hold_until = self.hold_until.max(now + HOLD_AFTER_QUOTA);
        self.next = self.hold_until;
        self.generation += 1;
        if since(self.last_cut).is_some_and(|d| d < CUT_SPACING) {
            return Verdict::Held;
        }
        let accepted_per_s = self.accepted.len() as f64;
        let target = accepted_per_s.min(self.rate) * 0.97;
        self.rate = target.max(self.rate * 0.5).max(self.floor);
        self.last_cut = Some(now);
        self.last_change = now;
        Verdict::Cut
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

/// The grid for a `--rate`: `TICK` from `GRID_FROM_RATE` calls a second.
fn grid_for(rate: u32) -> Option<Duration> {
    (rate >= GRID_FROM_RATE).then_some(TICK)
}

/// The last `phase` + a multiple of `tick` at or before `t` (`t` itself
/// before the first).
fn grid_floor_at(t: Duration, tick: Duration, phase: Duration) -> Duration {
    match t.checked_sub(phase) {
        Some(after) => grid_floor(after, tick) + phase,
        None => t,
    }
}

/// The last multiple of `tick` at or before `t`.
fn grid_floor(t: Duration, tick: Duration) -> Duration {
    let tick_ns = tick.as_nanos().max(1);
    let n = t.as_nanos() / tick_ns;
    Duration::from_nanos(u64::try_from(n * tick_ns).unwrap_or(u64::MAX))
}

/// The shared, adaptive limiter.
#[derive(Debug)]
pub(crate) struct Limiter {
    epoch: Instant,
    state: Mutex<RateState>,
}

impl Limiter {
    /// `None` when `rate` is 0 (no limit).
    pub(crate) fn new(rate: u32) -> Option<Self> {
        (rate > 0).then(|| Limiter {
            epoch: Instant::now(),
            state: Mutex::new(RateState::new(rate).with_grid(grid_for(rate))),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a slot. Slots reserved before a cut are re-reserved.
    pub(crate) async fn acquire(&self) {
        loop {
            let (slot, generation) = self.lock().reserve(self.epoch.elapsed());
            tokio::time::sleep_until(self.epoch + slot).await;
            if self.lock().generation() == generation {
                return;
            }
        }
    }

    pub(crate) fn on_accepted(&self) {
        let now = self.epoch.elapsed();
        let mut state = self.lock();
        let was = state.rate();
        state.on_accepted(now);
        if state.rate() != was {
            tracing::debug!(rate = state.rate(), was, "rate limit raised");
        }
    }

    pub(crate) fn on_quota(&self) {
        let now = self.epoch.elapsed();
        let mut state = self.lock();
        let was = state.rate();
        match state.on_quota(now) {
            Verdict::Shifted => {
                tracing::info!(
                    phase_ms = state.phase().as_millis() as u64,
                    rate = was,
                    "a quota answer at the full rate: calls move half a tick, off the edge of the API's second"
                );
            }
            Verdict::Cut => tracing::info!(
                rate = state.rate(),
                was,
                "rate limit lowered after a quota answer"
            ),
            Verdict::Held | Verdict::SameBurst => {}
        }
    }

    /// The rate in force, calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.lock().rate()
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

    /// Feed `accepted` calls a second from 1 s before the first quota answer
    /// (at 2 s) up to each answer in `quota_at` (ms after 2 s); the verdicts.
    fn answers(s: &mut RateState, accepted: u64, quota_at: &[u64]) -> Vec<Verdict> {
        let mut ok_at = (0..).map(|k| ms(1000 + k * 1000 / accepted.max(1)));
        let mut next_ok = ok_at.next().unwrap();
        let mut out = Vec::new();
        for &t in quota_at {
            while accepted > 0 && next_ok < ms(2000 + t) {
                s.on_accepted(next_ok);
                next_ok = ok_at.next().unwrap();
            }
            out.push(s.on_quota(ms(2000 + t)));
        }
        out
    }

    #[test]
    fn a_quota_answer_at_the_full_rate_moves_the_grid_off_the_edge_instead_of_cutting() {
        use Verdict::*;
        // (grid, rate, accepted a second, answers at ms, verdicts, rate after, phase after ms)
        type Case = (bool, u32, u64, Vec<u64>, Vec<Verdict>, f64, u64);
        let cases: Vec<Case> = vec![
            // A tick's calls refused together: one shift, the rest of the tick ignored.
            (
                true,
                200,
                200,
                vec![0, 0, 1],
                vec![Shifted, SameBurst, SameBurst],
                200.0,
                10,
            ),
            // Again later: the grid moves back; not again within SHIFT_SPACING
            // (the shift did not help: cut).
            (
                true,
                200,
                200,
                vec![0, 6000],
                vec![Shifted, Shifted],
                200.0,
                0,
            ),
            (true, 200, 200, vec![0, 2000], vec![Shifted, Cut], 194.0, 10),
            // 97% of the rate accepted is still the full rate.
            (true, 200, 194, vec![0], vec![Shifted], 200.0, 10),
            // Less: a lower quota (or a --rate above it), cut as always.
            (true, 200, 190, vec![0, 100], vec![Cut, Held], 184.3, 0),
            (true, 400, 200, vec![0], vec![Cut], 200.0, 0),
            // No grid (below GRID_FROM_RATE, or a test's limiter): cut.
            (false, 200, 200, vec![0], vec![Cut], 194.0, 0),
        ];
        // Climbing back after a cut (a --rate above the quota): the API
        // takes all of a rate below the ceiling, and a quota answer cuts.
        let mut s = RateState::new(400).with_grid(Some(TICK));
        assert_eq!(answers(&mut s, 200, &[0]), [Cut]);
        assert!(s.rate() < 400.0);
        let climbing = s.rate();
        // 250 calls a second taken while the rate climbs from 194 to 218.
        for k in 0..750u64 {
            s.on_accepted(ms(2300 + k * 4));
        }
        let rate = s.rate();
        assert!(rate > climbing && rate < 0.97 * 250.0, "{rate}");
        assert_eq!(
            s.on_quota(ms(5300)),
            Cut,
            "at {rate} calls/s, all taken, below --rate"
        );
        for (i, (grid, rate, accepted, at, want, want_rate, want_phase)) in
            cases.into_iter().enumerate()
        {
            let mut s = RateState::new(rate).with_grid(grid.then_some(TICK));
            let g = s.generation();
            let got = answers(&mut s, accepted, &at);
            assert_eq!(got, want, "case {i}");
            assert!(
                (s.rate() - want_rate).abs() < 0.01,
                "case {i}: rate {}",
                s.rate()
            );
            assert_eq!(s.phase(), ms(want_phase), "case {i}");
            assert!(
                s.generation() > g,
                "case {i}: slots handed out are taken again"
            );
        }
    }

    #[test]
    fn after_a_shift_calls_start_half_a_tick_later_with_no_hold_and_no_extra_call() {
        let mut s = RateState::new(200).with_grid(Some(TICK));
        assert_eq!(answers(&mut s, 200, &[3]), [Verdict::Shifted]);
        let now = ms(2003);
        // No hold: the calls of the tick `now` is in (1990..2010 on the new
        // phase) start at once, the next ones on 2010 + multiples of 20.
        let starts: Vec<Duration> = (0..8).map(|_| s.reserve(now).0).collect();
        assert_eq!(
            starts,
            [
                ms(1990),
                ms(1990),
                ms(2010),
                ms(2010),
                ms(2010),
                ms(2010),
                ms(2030),
                ms(2030)
            ]
        );
        // And no second holds more calls than the rate on the new phase.
        let all: Vec<Duration> = (0..1000).map(|_| s.reserve(now).0).collect();
        for from in (2000..5000).step_by(1) {
            let n = all
                .iter()
                .filter(|&&t| t >= ms(from) && t < ms(from + 1000))
                .count();
            assert!(n <= 200, "{n} calls in [{from}, +1 s)");
        }
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
        // Below GRID_FROM_RATE, no grid.
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
        // Under GRID_FROM_RATE: every call at its own time, no grid.
        let slow = std::sync::Arc::new(Limiter::new(10).unwrap());
        let t0 = Instant::now();
        slow.acquire().await;
        slow.acquire().await;
        assert_eq!(Instant::now() - t0, ms(100));
        assert!(Limiter::new(0).is_none());
    }
}
