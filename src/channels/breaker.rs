//! A circuit breaker: open after 5 consecutive failures, half-open after 60 s with a
//! single trial; the trial's success closes it, its failure opens it again, and a trial
//! that never reached the provider hands the trial back. Pure: the time is a parameter.

use chrono::{DateTime, Duration, Utc};

/// Consecutive failures that open the circuit.
pub const FAILURE_THRESHOLD: u32 = 5;
/// How long the circuit stays open before a trial.
pub const OPEN_FOR: Duration = Duration::seconds(60);

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Normal; counts consecutive failures.
    Closed {
        /// Failures in a row so far.
        failures: u32,
    },
    /// Failing fast until `until`.
    Open {
        /// When a trial may go.
        until: DateTime<Utc>,
    },
    /// One trial is allowed (or in flight).
    HalfOpen {
        /// Whether the trial has been handed out.
        trial_in_flight: bool,
    },
}

/// What a state change means for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing notable.
    None,
    /// The circuit just opened.
    Opened,
    /// The circuit just closed again.
    Closed,
}

/// The breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    state: BreakerState,
    /// How many trials were handed out: names the one in flight, so that only its holder
    /// can hand it back.
    trials: u64,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { state: BreakerState::Closed { failures: 0 }, trials: 0 }
    }
}

impl Breaker {
    /// The current state, after letting time move an open circuit to half-open.
    pub fn state(&mut self, now: DateTime<Utc>) -> BreakerState {
        if let BreakerState::Open { until } = self.state {
            if now >= until {
                self.state = BreakerState::HalfOpen { trial_in_flight: false };
            }
        }
        self.state
    }

    /// Whether a send may start now; in half-open this hands out the single trial.
    pub fn try_acquire(&mut self, now: DateTime<Utc>) -> bool {
        match self.state(now) {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen { trial_in_flight: true } => false,
            BreakerState::HalfOpen { trial_in_flight: false } => {
                self.state = BreakerState::HalfOpen { trial_in_flight: true };
                self.trials += 1;
                true
            }
        }
    }

    /// Whether the circuit refuses work now (without taking the trial).
    pub fn is_open(&mut self, now: DateTime<Utc>) -> bool {
        matches!(self.state(now), BreakerState::Open { .. } | BreakerState::HalfOpen { trial_in_flight: true })
    }

    /// When an open circuit allows a trial.
    pub fn open_until(&self) -> Option<DateTime<Utc>> {
        match self.state {
            BreakerState::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Records a successful send.
    pub fn success(&mut self) -> Transition {
        let was_closed = matches!(self.state, BreakerState::Closed { .. });
        self.state = BreakerState::Closed { failures: 0 };
        if was_closed {
            Transition::None
        } else {
            Transition::Closed
        }
    }

    /// The trial in flight, if any: what [`Self::try_acquire`] just handed out, for its
    /// holder to give to [`Self::release_trial`].
    pub fn trial_in_flight(&self) -> Option<u64> {
        matches!(self.state, BreakerState::HalfOpen { trial_in_flight: true }).then_some(self.trials)
    }

    /// Records that trial `trial` never asked the provider (the user switched the channel
    /// off or hit the hourly limit, or the hub could not read the row): it says nothing
    /// about the provider, so the trial goes to the next send. Without this a trial spent
    /// that way left the circuit half-open, refusing every send, until the hub restarted.
    /// A trial that is no longer the one in flight (the circuit opened and half-opened
    /// again meanwhile) changes nothing.
    pub fn release_trial(&mut self, trial: u64) {
        if self.trial_in_flight() == Some(trial) {
            self.state = BreakerState::HalfOpen { trial_in_flight: false };
        }
    }

    /// Records a failure of the provider (not a refusal of one message).
    pub fn failure(&mut self, now: DateTime<Utc>) -> Transition {
        match self.state {
            BreakerState::Closed { failures } if failures + 1 < FAILURE_THRESHOLD => {
                self.state = BreakerState::Closed { failures: failures + 1 };
                Transition::None
            }
            BreakerState::Closed { .. } | BreakerState::HalfOpen { .. } => {
                self.state = BreakerState::Open { until: now + OPEN_FOR };
                Transition::Opened
            }
            BreakerState::Open { .. } => Transition::None,
        }
    }

    /// Prometheus value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(&mut self, now: DateTime<Utc>) -> u8 {
        match self.state(now) {
            BreakerState::Closed { .. } => 0,
            BreakerState::Open { .. } => 1,
            BreakerState::HalfOpen { .. } => 2,
        }
    }
}

/// Delay before retry number `attempt` (1-based) after a transient failure: 1 s, 2 s,
/// 4 s; `None` once the three retries are spent.
pub fn retry_delay(attempt: u32) -> Option<Duration> {
    match attempt {
        1 => Some(Duration::seconds(1)),
        2 => Some(Duration::seconds(2)),
        3 => Some(Duration::seconds(4)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn opens_after_five_consecutive_failures_only() {
        let mut b = Breaker::default();
        for _ in 0..4 {
            assert_eq!(b.failure(t(0)), Transition::None);
        }
        assert_eq!(b.success(), Transition::None, "a success resets the count");
        for _ in 0..4 {
            b.failure(t(0));
        }
        assert!(b.try_acquire(t(0)));
        assert_eq!(b.failure(t(0)), Transition::Opened);
        assert!(!b.try_acquire(t(1)));
        assert!(b.is_open(t(59)));
        assert_eq!(b.open_until(), Some(t(60)));
    }

    #[test]
    fn half_open_allows_one_trial_that_decides() {
        let mut b = Breaker::default();
        for _ in 0..5 {
            b.failure(t(0));
        }
        assert!(!b.try_acquire(t(59)));
        assert!(b.try_acquire(t(60)), "the trial");
        assert_eq!(b.gauge(t(60)), 2);
        assert!(!b.try_acquire(t(60)), "only one trial");
        assert_eq!(b.failure(t(61)), Transition::Opened, "a failed trial reopens");
        assert!(!b.try_acquire(t(120)));
        assert!(b.try_acquire(t(121)));
        assert_eq!(b.success(), Transition::Closed);
        assert_eq!(b.gauge(t(121)), 0);
        assert!(b.try_acquire(t(121)));
    }

    #[test]
    fn a_trial_that_never_reached_the_provider_is_handed_back() {
        let mut b = Breaker::default();
        for _ in 0..5 {
            b.failure(t(0));
        }
        assert!(b.try_acquire(t(60)), "the trial");
        let first = b.trial_in_flight().unwrap();
        b.release_trial(first);
        assert_eq!(b.gauge(t(60)), 2, "still half-open");
        assert!(!b.is_open(t(60)), "a test send may go");
        assert!(b.try_acquire(t(60)), "the next send is the trial");
        assert!(!b.try_acquire(t(60)), "and the only one");
        let second = b.trial_in_flight().unwrap();
        assert_ne!(first, second);
        assert_eq!(b.failure(t(61)), Transition::Opened);
        b.release_trial(second);
        assert!(!b.try_acquire(t(62)), "releasing does not undo an open circuit");
    }

    #[test]
    fn only_the_trial_in_flight_can_be_handed_back() {
        let mut b = Breaker::default();
        for _ in 0..5 {
            b.failure(t(0));
        }
        assert!(b.try_acquire(t(60)));
        let slow = b.trial_in_flight().unwrap();
        // An older attempt fails meanwhile: open again, then a new trial a minute later.
        b.failure(t(61));
        assert!(b.try_acquire(t(121)));
        let current = b.trial_in_flight().unwrap();
        // The slow first trial ends without asking the provider: the current one stays.
        b.release_trial(slow);
        assert_eq!(b.trial_in_flight(), Some(current));
        assert!(!b.try_acquire(t(121)), "still one trial at a time");
        b.release_trial(current);
        assert!(b.try_acquire(t(121)));
    }

    #[test]
    fn releasing_outside_a_trial_changes_nothing() {
        let mut b = Breaker::default();
        b.failure(t(0));
        assert_eq!(b.trial_in_flight(), None);
        b.release_trial(0);
        assert_eq!(b, {
            let mut c = Breaker::default();
            c.failure(t(0));
            c
        });
        for _ in 0..4 {
            b.failure(t(0));
        }
        b.release_trial(0);
        assert!(b.is_open(t(1)));
        assert!(b.try_acquire(t(60)));
        let trial = b.trial_in_flight().unwrap();
        b.success();
        b.release_trial(trial);
        assert!(b.try_acquire(t(60)) && b.try_acquire(t(60)), "closed: no trial to hand back");
    }

    #[test]
    fn retry_schedule_is_one_two_four_seconds_then_stop() {
        assert_eq!(retry_delay(1), Some(Duration::seconds(1)));
        assert_eq!(retry_delay(2), Some(Duration::seconds(2)));
        assert_eq!(retry_delay(3), Some(Duration::seconds(4)));
        assert_eq!(retry_delay(4), None);
    }
}
