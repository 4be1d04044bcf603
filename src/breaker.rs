//! Circuit breakers (`[breaker]`, nmid's `Breaker`): the state machine of one breaker, as
//! plain data with the time passed in, so that every rule is pinned by a unit test without
//! actors or clocks. The scheduler keeps one per worker and function and takes a worker out
//! of placement for a function while that breaker is open.
//!
//! ```text
//!            a failure trips the rule              open_timeout_ms passed
//!   Closed ---------------------------> Open ---------------------------> HalfOpen
//!     ^                                   ^                                  |
//!     |                                   +------- any failure --------------+
//!     +---------------- half_open_requests successes ------------------------+
//! ```
//!
//! - **Closed**: every call may go to the worker. Each verdict is counted in a sliding window
//!   of `window_ms` (ten buckets) and in a run of consecutive failures; a failure that makes
//!   the configured [`Rule`] true opens the breaker.
//! - **Open**: no call goes to the worker for `open_timeout_ms`; verdicts of calls placed
//!   before it opened are ignored. Then it becomes half-open (the owner asks with
//!   [`Breaker::poll`] once the time given by [`Transition::Opened`] has come).
//! - **HalfOpen**: at most `half_open_requests` trial calls go to the worker; that many
//!   successes close it (with fresh counts), any failure opens it again.
//!
//! nmid's rule types, by number (`breaker.rule`; nmid's `Breaker.rule_type`, whose comment in
//! its `server.yaml` says the same: 3 is "or", 4 is "and"):
//!
//! | rule | opens when |
//! |---|---|
//! | 1 | `consecutive_errors` failures in a row |
//! | 2 | at least `min_requests` verdicts in the window, and `error_percent`% of them failures |
//! | 3 | either of the two (OR) |
//! | 4 | both of them at once (AND) |

use std::time::{Duration, Instant};

/// Buckets of the sliding window: the window moves in steps of a tenth of `window_ms`.
const WINDOW_BUCKETS: usize = 10;

/// When a breaker opens: nmid's rule types 1-4 (`breaker.rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// 1: `consecutive_errors` failures in a row.
    ConsecutiveErrors,
    /// 2: `error_percent`% of the window's verdicts failed, with at least `min_requests`.
    ErrorPercent,
    /// 3: rule 1 or rule 2.
    Either,
    /// 4: rule 1 and rule 2 at once.
    Both,
}

impl Rule {
    /// The rule of nmid's `rule_type` number, if it is one (1 to 4).
    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            1 => Some(Rule::ConsecutiveErrors),
            2 => Some(Rule::ErrorPercent),
            3 => Some(Rule::Either),
            4 => Some(Rule::Both),
            _ => None,
        }
    }
}

/// How every breaker behaves (`[breaker]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// When a closed breaker opens.
    pub rule: Rule,
    /// Failures in a row that make rule 1 true (`breaker.consecutive_errors`).
    pub consecutive_errors: u32,
    /// Share of failures, in percent, that makes rule 2 true (`breaker.error_percent`).
    pub error_percent: u32,
    /// Verdicts the window must hold before rule 2 can be true (`breaker.min_requests`).
    pub min_requests: u32,
    /// The sliding window of rule 2 (`breaker.window_ms`).
    pub window: Duration,
    /// Trial calls of a half-open breaker; that many successes close it
    /// (`breaker.half_open_requests`).
    pub half_open_requests: u32,
    /// How long a breaker stays open before it lets trial calls through
    /// (`breaker.open_timeout_ms`).
    pub open_timeout: Duration,
}

/// What one call says about its worker.
///
/// A failure is what says the *worker* is unwell: the function reported failing (tagged
/// `W_JOB_ERROR`), the call's deadline passed while the worker held it, or the worker's answer
/// could not be matched to its call. A v1 RetStruct with a non-zero `Code` is an answer, as
/// nmid's server counts it: a success here (the function decided, the worker worked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The worker answered.
    Success,
    /// The worker failed the call.
    Failure,
}

/// A breaker's state, as the admin API and the metrics show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// No call goes to the worker for this function.
    Open,
    /// Only trial calls go to the worker.
    HalfOpen,
}

impl BreakerState {
    /// The state's name: `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A change of state, for the owner to act on (and count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The breaker opened; at `until` the owner calls [`Breaker::poll`] to let trials through.
    Opened {
        /// When the open timeout ends.
        until: Instant,
    },
    /// The open timeout ended: trial calls may go.
    HalfOpened,
    /// Enough trials succeeded: calls flow again.
    Closed,
}

impl Transition {
    /// The state the breaker went to.
    pub fn to(self) -> BreakerState {
        match self {
            Transition::Opened { .. } => BreakerState::Open,
            Transition::HalfOpened => BreakerState::HalfOpen,
            Transition::Closed => BreakerState::Closed,
        }
    }
}

/// One breaker: of one worker, for one function.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Closed {
        /// Failures since the last success.
        consecutive: u32,
        window: Window,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        /// Trial calls that may still be placed.
        trials_left: u32,
        /// Successes still needed to close.
        successes_needed: u32,
    },
}

impl Breaker {
    /// A closed breaker whose window starts at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            state: State::Closed {
                consecutive: 0,
                window: Window::new(now),
            },
        }
    }

    /// Its state now.
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may be placed on the worker now: closed, or half-open with a trial
    /// left. Asks only; [`Breaker::placed`] takes the trial.
    pub fn admits(&self) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { .. } => false,
            State::HalfOpen { trials_left, .. } => trials_left > 0,
        }
    }

    /// A call was placed on the worker: a half-open breaker has one trial fewer.
    pub fn placed(&mut self) {
        if let State::HalfOpen { trials_left, .. } = &mut self.state {
            *trials_left = trials_left.saturating_sub(1);
        }
    }

    /// Counts the `verdict` on one call at `now`; returns the transition it caused.
    ///
    /// While open, verdicts (of calls placed before it opened) are ignored. While half-open,
    /// any verdict counts, a trial's or an older call's: a failure is a failure.
    pub fn record(
        &mut self,
        verdict: Verdict,
        now: Instant,
        settings: &BreakerSettings,
    ) -> Option<Transition> {
        let failed = verdict == Verdict::Failure;
        match &mut self.state {
            State::Closed {
                consecutive,
                window,
            } => {
                window.add(now, settings.window, failed);
                if !failed {
                    *consecutive = 0;
                    return None;
                }
                *consecutive = consecutive.saturating_add(1);
                let (requests, failures) = window.totals(now, settings.window);
                trips(settings, *consecutive, requests, failures).then(|| self.open(now, settings))
            }
            State::Open { .. } => None,
            State::HalfOpen { .. } if failed => Some(self.open(now, settings)),
            State::HalfOpen {
                successes_needed, ..
            } => {
                *successes_needed = successes_needed.saturating_sub(1);
                if *successes_needed > 0 {
                    return None;
                }
                *self = Self::new(now);
                Some(Transition::Closed)
            }
        }
    }

    /// An open breaker whose timeout has ended by `now` becomes half-open.
    pub fn poll(&mut self, now: Instant, settings: &BreakerSettings) -> Option<Transition> {
        match self.state {
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen {
                    trials_left: settings.half_open_requests,
                    successes_needed: settings.half_open_requests,
                };
                Some(Transition::HalfOpened)
            }
            _ => None,
        }
    }

    fn open(&mut self, now: Instant, settings: &BreakerSettings) -> Transition {
        let until = now + settings.open_timeout;
        self.state = State::Open { until };
        Transition::Opened { until }
    }
}

/// Whether a closed breaker with these counts opens under `settings.rule`.
fn trips(settings: &BreakerSettings, consecutive: u32, requests: u64, failures: u64) -> bool {
    let by_count = consecutive >= settings.consecutive_errors;
    let by_percent = requests >= u64::from(settings.min_requests)
        && failures * 100 >= u64::from(settings.error_percent) * requests;
    match settings.rule {
        Rule::ConsecutiveErrors => by_count,
        Rule::ErrorPercent => by_percent,
        Rule::Either => by_count || by_percent,
        Rule::Both => by_count && by_percent,
    }
}

/// Verdicts of the last `window`, in [`WINDOW_BUCKETS`] buckets of a tenth of it each: a
/// fixed 160 bytes however many calls, and old verdicts age out a tenth at a time.
#[derive(Debug, Clone)]
struct Window {
    /// The time bucket numbers count from.
    origin: Instant,
    buckets: [Bucket; WINDOW_BUCKETS],
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of time this is (`elapsed / width`); its counts are stale otherwise.
    number: u64,
    requests: u32,
    failures: u32,
}

impl Window {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            buckets: [Bucket::default(); WINDOW_BUCKETS],
        }
    }

    /// The number of the bucket of time `now` falls in.
    fn number(&self, now: Instant, window: Duration) -> u64 {
        let width = (window.as_nanos() / WINDOW_BUCKETS as u128).max(1);
        (now.saturating_duration_since(self.origin).as_nanos() / width) as u64
    }

    fn add(&mut self, now: Instant, window: Duration, failed: bool) {
        let number = self.number(now, window);
        let bucket = &mut self.buckets[(number % WINDOW_BUCKETS as u64) as usize];
        if bucket.number != number {
            *bucket = Bucket {
                number,
                ..Bucket::default()
            };
        }
        bucket.requests = bucket.requests.saturating_add(1);
        bucket.failures = bucket.failures.saturating_add(u32::from(failed));
    }

    /// Verdicts and failures of the buckets within the window ending at `now`.
    fn totals(&self, now: Instant, window: Duration) -> (u64, u64) {
        let newest = self.number(now, window);
        let live = |b: &&Bucket| b.number <= newest && newest - b.number < WINDOW_BUCKETS as u64;
        (self.buckets.iter().filter(live)).fold((0, 0), |(r, f), b| {
            (r + u64::from(b.requests), f + u64::from(b.failures))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn settings(rule: Rule) -> BreakerSettings {
        BreakerSettings {
            rule,
            consecutive_errors: 3,
            error_percent: 50,
            min_requests: 4,
            window: Duration::from_secs(10),
            half_open_requests: 2,
            open_timeout: Duration::from_secs(5),
        }
    }

    /// Feeds `verdicts` (`s` success, `f` failure) one millisecond apart from `start`;
    /// returns the transitions and the time of the last verdict.
    fn feed(
        breaker: &mut Breaker,
        settings: &BreakerSettings,
        start: Instant,
        verdicts: &str,
    ) -> (Vec<BreakerState>, Instant) {
        let mut transitions = Vec::new();
        let mut now = start;
        for (i, v) in verdicts.chars().enumerate() {
            now = start + MS * i as u32;
            let verdict = match v {
                's' => Verdict::Success,
                'f' => Verdict::Failure,
                other => panic!("verdict {other:?}"),
            };
            if let Some(t) = breaker.record(verdict, now, settings) {
                transitions.push(t.to());
            }
        }
        (transitions, now)
    }

    /// Rule 1 opens on `consecutive_errors` failures in a row, and a success resets the run.
    #[test]
    fn rule_1_opens_on_consecutive_errors_only() {
        let s = settings(Rule::ConsecutiveErrors);
        let t0 = Instant::now();
        let mut b = Breaker::new(t0);
        // 2 failures, a success, 2 failures: never 3 in a row, though 80% failed.
        let (transitions, _) = feed(&mut b, &s, t0, "ffsff");
        assert!(transitions.is_empty());
        assert_eq!(b.state(), BreakerState::Closed);
        let (transitions, _) = feed(&mut b, &s, t0 + MS * 10, "f");
        assert_eq!(transitions, [BreakerState::Open]);
        assert!(!b.admits());
    }

    /// Rule 2 opens at `error_percent` of the window with `min_requests` verdicts, not before,
    /// however many failures came in a row.
    #[test]
    fn rule_2_opens_on_the_error_percentage_over_min_requests() {
        let s = settings(Rule::ErrorPercent);
        let t0 = Instant::now();
        let mut b = Breaker::new(t0);
        // 3 failures in a row: only 3 verdicts, under min_requests.
        let (transitions, _) = feed(&mut b, &s, t0, "fff");
        assert!(transitions.is_empty(), "{transitions:?}");
        // The fourth verdict, a failure: 4 of 4.
        let (transitions, _) = feed(&mut b, &s, t0 + MS * 3, "f");
        assert_eq!(transitions, [BreakerState::Open]);

        // Just under 50% does not open; 50% does.
        let mut b = Breaker::new(t0);
        let under = "s".repeat(51) + &"f".repeat(50);
        let (transitions, at) = feed(&mut b, &s, t0, &under);
        assert!(transitions.is_empty(), "50 of 101 is under 50%");
        let (transitions, _) = feed(&mut b, &s, at + MS, "f");
        assert_eq!(transitions, [BreakerState::Open], "51 of 102 is 50%");
    }

    /// Rule 2 counts only the window: failures older than `window_ms` age out.
    #[test]
    fn rule_2_forgets_verdicts_older_than_the_window() {
        let s = settings(Rule::ErrorPercent);
        let t0 = Instant::now();
        let mut b = Breaker::new(t0);
        feed(&mut b, &s, t0, "fff");
        // 11 s later the three failures are gone: one failure among three successes is 25%.
        let later = t0 + Duration::from_secs(11);
        let (transitions, _) = feed(&mut b, &s, later, "sssf");
        assert!(transitions.is_empty(), "{transitions:?}");
        assert_eq!(b.state(), BreakerState::Closed);
        // Within the window they count: 3 failures + 1 of 4 = 4 of 7 = 57%.
        let mut b = Breaker::new(t0);
        feed(&mut b, &s, t0, "fff");
        let (transitions, _) = feed(&mut b, &s, t0 + Duration::from_secs(5), "sssf");
        assert_eq!(transitions, [BreakerState::Open]);
    }

    /// Rule 3 opens on either condition: a run of failures with few verdicts, or a high
    /// share without a run.
    #[test]
    fn rule_3_opens_on_either() {
        let s = settings(Rule::Either);
        let t0 = Instant::now();
        let mut b = Breaker::new(t0);
        let (transitions, _) = feed(&mut b, &s, t0, "fff");
        assert_eq!(transitions, [BreakerState::Open], "3 in a row, 3 verdicts");
        let mut b = Breaker::new(t0);
        let (transitions, _) = feed(&mut b, &s, t0, "sfsfsf");
        assert_eq!(transitions, [BreakerState::Open], "2 of 4, no run of 3");
    }

    /// Rule 4 opens only when both hold at once.
    #[test]
    fn rule_4_opens_on_both() {
        let s = settings(Rule::Both);
        let t0 = Instant::now();
        let mut b = Breaker::new(t0);
        let (transitions, _) = feed(&mut b, &s, t0, "fff");
        assert!(transitions.is_empty(), "a run of 3 but only 3 verdicts");
        let mut b = Breaker::new(t0);
        let (transitions, _) = feed(&mut b, &s, t0, "fsfsfsfs");
        assert!(transitions.is_empty(), "50% but no run");
        let (transitions, _) = feed(&mut b, &s, t0 + MS * 8, "ff");
        assert!(transitions.is_empty(), "60% but a run of only 2");
        let (transitions, _) = feed(&mut b, &s, t0 + MS * 10, "f");
        assert_eq!(transitions, [BreakerState::Open], "7 of 11 and a run of 3");
    }

    /// Open for `open_timeout`, then half-open with `half_open_requests` trials; that many
    /// successes close it with fresh counts.
    #[test]
    fn an_open_breaker_half_opens_after_its_timeout_and_successes_close_it() {
        let s = settings(Rule::ConsecutiveErrors);
        let t0 = Instant::now();
        let mut b = Breaker::new(t0);
        assert!(b.admits());
        let opened = b.record(Verdict::Failure, t0, &s);
        assert_eq!(opened, None);
        b.record(Verdict::Failure, t0, &s);
        let opened = b.record(Verdict::Failure, t0, &s);
        assert_eq!(
            opened,
            Some(Transition::Opened {
                until: t0 + s.open_timeout
            })
        );
        // Verdicts of calls placed before it opened change nothing while open.
        assert_eq!(b.record(Verdict::Success, t0 + MS, &s), None);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.poll(t0 + s.open_timeout - MS, &s), None, "too early");
        assert!(!b.admits());
        assert_eq!(
            b.poll(t0 + s.open_timeout, &s),
            Some(Transition::HalfOpened)
        );
        // Two trials, then no more until they are judged.
        assert!(b.admits());
        b.placed();
        assert!(b.admits());
        b.placed();
        assert!(!b.admits(), "both trials taken");
        let t1 = t0 + s.open_timeout + MS;
        assert_eq!(b.record(Verdict::Success, t1, &s), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.record(Verdict::Success, t1, &s), Some(Transition::Closed));
        assert!(b.admits());
        // Fresh counts: two failures do not reopen it.
        assert_eq!(b.record(Verdict::Failure, t1, &s), None);
        assert_eq!(b.record(Verdict::Failure, t1, &s), None);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// A failure while half-open opens the breaker again for another `open_timeout`.
    #[test]
    fn a_failed_trial_opens_the_breaker_again() {
        for rule in [
            Rule::ConsecutiveErrors,
            Rule::ErrorPercent,
            Rule::Either,
            Rule::Both,
        ] {
            let s = settings(rule);
            let t0 = Instant::now();
            let mut b = Breaker::new(t0);
            let (transitions, at) = feed(&mut b, &s, t0, "ffff");
            assert_eq!(transitions, [BreakerState::Open], "{rule:?}");
            let half = at + s.open_timeout;
            assert_eq!(b.poll(half, &s), Some(Transition::HalfOpened), "{rule:?}");
            b.placed();
            let reopened = b.record(Verdict::Failure, half + MS, &s);
            assert_eq!(
                reopened,
                Some(Transition::Opened {
                    until: half + MS + s.open_timeout
                }),
                "{rule:?}"
            );
            assert!(!b.admits());
            assert_eq!(
                b.poll(half + s.open_timeout, &s),
                None,
                "{rule:?}: too early"
            );
        }
    }

    /// nmid's rule numbers map to the rules; anything else is not a rule.
    #[test]
    fn rule_numbers_are_nmids() {
        assert_eq!(Rule::from_number(1), Some(Rule::ConsecutiveErrors));
        assert_eq!(Rule::from_number(2), Some(Rule::ErrorPercent));
        assert_eq!(Rule::from_number(3), Some(Rule::Either));
        assert_eq!(Rule::from_number(4), Some(Rule::Both));
        assert_eq!(Rule::from_number(0), None);
        assert_eq!(Rule::from_number(5), None);
    }
}
