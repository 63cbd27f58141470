//! Doubling retry delays with a cap, reset after a success: the accept loop after accept
//! errors and the watch caches after failed lists/watches both wait this way.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    last: Option<Duration>,
}

impl Backoff {
    /// `first`, then doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            last: None,
        }
    }

    /// The next delay to wait.
    pub fn next_delay(&mut self) -> Duration {
        let next = match self.last {
            None => self.first,
            Some(d) => (d * 2).min(self.max),
        };
        self.last = Some(next);
        next
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
        assert_eq!(b.next_delay(), Duration::from_millis(5));
        assert_eq!(b.next_delay(), Duration::from_millis(10));
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.windows(2).all(|w| w[1] >= w[0]), "{delays:?}");
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(5));
    }
}
