//! A circuit breaker per backend, so that a dead backend does not cost every request its
//! full deadline.
//!
//! After [`FAILURES_TO_OPEN`] calls in a row found the backend unavailable *and made their
//! caller wait* (a stall, a deadline; a refused connection fails at once and does not count,
//! see `backends::guarded`), the circuit opens:
//! calls fail at once (and go on to the failover backends, or to a stale answer) for a
//! backoff that starts at one second and doubles up to ten seconds. When it has passed,
//! one call is let through as a trial; its success closes the circuit, its failure opens it
//! again for the next, longer, backoff. Only unavailability counts: a query error proves the
//! backend is up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// Calls in a row that must find the backend unavailable before the circuit opens.
pub const FAILURES_TO_OPEN: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    trial_in_flight: bool,
    backoff: Backoff,
}

/// Whether a call may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// The circuit is closed.
    Call,
    /// The circuit was open and its backoff has passed: this call tests the backend.
    Trial,
    /// The circuit is open; the next trial is due in this long (zero: a trial is running).
    Refused(Duration),
}

/// What a call found, for [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer, or an error that is the query's (the backend is up).
    Up,
    /// Unreachable, past its deadline, 5xx, refused credentials...
    Unavailable,
    /// The call was abandoned before it ended (the request went away), or failed too fast to
    /// matter: nothing learned.
    Abandoned,
}

/// What changed, for the caller to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Opened { retry_in: Duration },
    Closed,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State {
                failures: 0,
                open_until: None,
                trial_in_flight: false,
                backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
            }),
        }
    }
}

impl Breaker {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn permit(&self) -> Permit {
        self.permit_at(Instant::now())
    }

    fn permit_at(&self, now: Instant) -> Permit {
        let mut state = self.state();
        match state.open_until {
            None => Permit::Call,
            Some(until) if now < until => Permit::Refused(until - now),
            Some(_) if state.trial_in_flight => Permit::Refused(Duration::ZERO),
            Some(_) => {
                state.trial_in_flight = true;
                Permit::Trial
            }
        }
    }

    /// Records what a permitted call found.
    pub fn record(&self, permit: Permit, outcome: Outcome) -> Change {
        self.record_at(permit, outcome, Instant::now())
    }

    fn record_at(&self, permit: Permit, outcome: Outcome, now: Instant) -> Change {
        let mut state = self.state();
        if permit == Permit::Trial {
            state.trial_in_flight = false;
        }
        match outcome {
            Outcome::Abandoned => Change::None,
            Outcome::Up => {
                let was_open = state.open_until.is_some();
                state.failures = 0;
                state.open_until = None;
                state.backoff.reset();
                if was_open {
                    Change::Closed
                } else {
                    Change::None
                }
            }
            Outcome::Unavailable => {
                state.failures = state.failures.saturating_add(1);
                let reopen = permit == Permit::Trial;
                let open = state.open_until.is_none() && state.failures >= FAILURES_TO_OPEN;
                if reopen || open {
                    let retry_in = state.backoff.next_delay();
                    state.open_until = Some(now + retry_in);
                    Change::Opened { retry_in }
                } else {
                    Change::None
                }
            }
        }
    }

    /// Open now (refusing calls or waiting for a trial).
    pub fn is_open(&self) -> bool {
        self.state().open_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_closes_on_a_good_trial() {
        let b = Breaker::default();
        let t0 = Instant::now();
        // A success between failures resets the count.
        for outcome in [Outcome::Unavailable, Outcome::Unavailable, Outcome::Up] {
            assert_eq!(b.permit_at(t0), Permit::Call);
            assert_eq!(b.record_at(Permit::Call, outcome, t0), Change::None);
        }
        for i in 1..=FAILURES_TO_OPEN {
            let change = b.record_at(Permit::Call, Outcome::Unavailable, t0);
            if i < FAILURES_TO_OPEN {
                assert_eq!(change, Change::None);
            } else {
                assert_eq!(
                    change,
                    Change::Opened {
                        retry_in: FIRST_BACKOFF
                    }
                );
            }
        }
        assert!(b.is_open());
        assert_eq!(b.permit_at(t0), Permit::Refused(FIRST_BACKOFF));
        // Backoff passed: one trial, the others still refused while it runs.
        let later = t0 + FIRST_BACKOFF;
        assert_eq!(b.permit_at(later), Permit::Trial);
        assert_eq!(b.permit_at(later), Permit::Refused(Duration::ZERO));
        // It fails: open again, for twice as long.
        assert_eq!(
            b.record_at(Permit::Trial, Outcome::Unavailable, later),
            Change::Opened {
                retry_in: FIRST_BACKOFF * 2
            }
        );
        let later = later + FIRST_BACKOFF * 2;
        assert_eq!(b.permit_at(later), Permit::Trial);
        assert_eq!(
            b.record_at(Permit::Trial, Outcome::Up, later),
            Change::Closed
        );
        assert!(!b.is_open());
        assert_eq!(b.permit_at(later), Permit::Call);
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_call_try() {
        let b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_TO_OPEN {
            b.record_at(Permit::Call, Outcome::Unavailable, t0);
        }
        let later = t0 + MAX_BACKOFF;
        assert_eq!(b.permit_at(later), Permit::Trial);
        assert_eq!(
            b.record_at(Permit::Trial, Outcome::Abandoned, later),
            Change::None
        );
        assert_eq!(b.permit_at(later), Permit::Trial);
    }

    #[test]
    fn backoff_is_capped() {
        let b = Breaker::default();
        let mut now = Instant::now();
        for _ in 0..FAILURES_TO_OPEN {
            b.record_at(Permit::Call, Outcome::Unavailable, now);
        }
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            now += MAX_BACKOFF;
            assert_eq!(b.permit_at(now), Permit::Trial);
            match b.record_at(Permit::Trial, Outcome::Unavailable, now) {
                Change::Opened { retry_in } => last = retry_in,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(last, MAX_BACKOFF);
    }
}
