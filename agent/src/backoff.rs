//! Exponential backoff with jitter for reconnecting to the aggregator.
//!
//! Role: the delays between connection attempts: start at `initial`, double after every failed
//! attempt up to `max`, each delay randomised to between half and all of its nominal value (so
//! many agents restarted together do not reconnect in lock-step), reset after a success.
//! Touches nothing.

use std::time::Duration;

/// Reconnection delays.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Delays from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max: max.max(initial), current: initial }
    }

    /// The agent's default: 100 ms doubling to 10 s.
    pub fn agent_default() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// The delay before the next attempt (jittered), and doubles the nominal delay.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.current;
        self.current = (self.current * 2).min(self.max);
        nominal.mul_f64(0.5 + fastrand::f64() * 0.5)
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut nominal = Duration::from_millis(100);
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d >= nominal / 2 && d <= nominal, "{d:?} outside [{:?}, {nominal:?}]", nominal / 2);
            nominal = (nominal * 2).min(Duration::from_secs(10));
        }
        assert_eq!(nominal, Duration::from_secs(10));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
