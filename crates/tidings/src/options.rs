//! Knobs: [`HandlerOptions`] per handler, [`Backoff`] between attempts, [`Overflow`] for a full queue.

use std::time::Duration;

/// How a handler is run: attempts, backoff, timeout and concurrency.
///
/// The defaults: 3 attempts, exponential backoff from 100 ms to 30 s with full
/// jitter, a 30 s timeout per attempt, and up to 32 calls of the handler at once.
///
/// ```
/// use std::time::Duration;
/// use tidings::HandlerOptions;
///
/// let opts = HandlerOptions::default()
///     .attempts(5)
///     .timeout(Duration::from_secs(2))
///     .concurrency(4);
/// assert_eq!(opts.max_attempts, 5);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HandlerOptions {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Time one attempt may take before it counts as failed; `None` waits forever.
    pub timeout: Option<Duration>,
    /// How many calls of this handler may run at once (at least 1).
    pub concurrency: usize,
}

impl Default for HandlerOptions {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff: Backoff::default(),
            timeout: Some(Duration::from_secs(30)),
            concurrency: 32,
        }
    }
}

impl HandlerOptions {
    /// Sets the number of attempts, the first included.
    ///
    /// ```
    /// assert_eq!(tidings::HandlerOptions::default().attempts(1).max_attempts, 1);
    /// ```
    pub fn attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the backoff between attempts.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tidings::Backoff::fixed(Duration::from_millis(10));
    /// assert_eq!(tidings::HandlerOptions::default().backoff(b.clone()).backoff, b);
    /// ```
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the timeout of one attempt.
    ///
    /// ```
    /// use std::time::Duration;
    /// let o = tidings::HandlerOptions::default().timeout(Duration::from_secs(1));
    /// assert_eq!(o.timeout, Some(Duration::from_secs(1)));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Lets attempts run as long as they like.
    ///
    /// ```
    /// assert_eq!(tidings::HandlerOptions::default().no_timeout().timeout, None);
    /// ```
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Sets how many calls of the handler may run at once.
    ///
    /// ```
    /// assert_eq!(tidings::HandlerOptions::default().concurrency(1).concurrency, 1);
    /// ```
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("concurrency must be at least 1".into());
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err("timeout must be above zero".into());
        }
        self.backoff.check()
    }
}

/// Exponential backoff with jitter.
///
/// The delay before attempt `n + 1` (after `n` failures) is
/// `min(max, initial * multiplier^(n-1))`, of which a random fraction up to
/// `jitter` is taken off, so that retries of many events spread out.
///
/// ```
/// use std::time::Duration;
/// let b = tidings::Backoff::default();
/// let d = b.delay(1);
/// assert!(d <= Duration::from_millis(100));
/// assert!(b.delay(40) <= Duration::from_secs(30));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// Delay after the first failure, before jitter.
    pub initial: Duration,
    /// Largest delay, before jitter.
    pub max: Duration,
    /// Growth per failure (at least 1.0).
    pub multiplier: f64,
    /// Fraction of the delay that may be taken off at random, from 0.0 (none) to 1.0 (full jitter).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 1.0,
        }
    }
}

impl Backoff {
    /// Exponential backoff from `initial` up to `max`, doubling, with full jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tidings::Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1));
    /// assert!(b.delay(3) <= Duration::from_millis(40));
    /// ```
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ..Self::default()
        }
    }

    /// The same delay every time, no jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tidings::Backoff::fixed(Duration::from_millis(5));
    /// assert_eq!(b.delay(7), Duration::from_millis(5));
    /// ```
    pub fn fixed(delay: Duration) -> Self {
        Self {
            initial: delay,
            max: delay,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// Sets the growth per failure (at least 1.0; `build()` refuses less).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tidings::Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)).with_multiplier(3.0);
    /// assert_eq!(b.ceiling(3), Duration::from_millis(90));
    /// ```
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the jitter fraction, clamped to 0.0..=1.0.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tidings::Backoff::exponential(Duration::from_millis(8), Duration::from_secs(1)).with_jitter(0.0);
    /// assert_eq!(b.delay(2), Duration::from_millis(16));
    /// ```
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// The ceiling of the delay after `failures` failures (1-based), before jitter.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tidings::Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
    /// assert_eq!(b.ceiling(1), Duration::from_millis(100));
    /// assert_eq!(b.ceiling(2), Duration::from_millis(200));
    /// assert_eq!(b.ceiling(30), Duration::from_secs(1));
    /// ```
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The delay after `failures` failures, jitter applied.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = tidings::Backoff::default();
    /// assert!(b.delay(2) <= b.ceiling(2));
    /// ```
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        if self.jitter <= 0.0 {
            return ceiling;
        }
        let cut: f64 = rand::random::<f64>() * self.jitter;
        ceiling.mul_f64(1.0 - cut)
    }

    fn check(&self) -> Result<(), String> {
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err("backoff multiplier must be a finite number of at least 1.0".into());
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err("backoff jitter must be between 0.0 and 1.0".into());
        }
        if self.initial > self.max {
            return Err("backoff initial delay must not exceed its max".into());
        }
        Ok(())
    }
}

/// What `emit` does when the queue is full.
///
/// ```
/// let bus = tidings::EventBus::builder().overflow(tidings::Overflow::Reject);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Overflow {
    /// `emit` waits for room: backpressure on the caller. (Inside a handler it
    /// never waits; it fails with `QueueFull`, so the handler is retried later
    /// instead of deadlocking a full bus.)
    #[default]
    Wait,
    /// `emit` fails at once with [`crate::EmitError::QueueFull`].
    Reject,
}
