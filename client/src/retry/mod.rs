//! Retries that respect the breaker and a retry budget.
//!
//! [`RetryPolicy::run`] makes up to `max_attempts` attempts (default 3,
//! 1..=10), each through the circuit and under a timeout, sleeping an
//! exponential, jittered delay between them ([`Backoff::delay`]). It stops
//! early, and never calls the dependency, when:
//!
//! * the circuit rejects an attempt ([`Stop::Rejected`]: the rejection, for
//!   example [`Error::Open`], is returned as is), or the circuit is already
//!   known open past the next attempt's time (no point sleeping to be
//!   rejected; [`Stop::CircuitOpen`]);
//! * the [retry budget](budget) is spent ([`Stop::Budget`]): retries stay
//!   below a fraction of calls (default 20 %) plus a small floor per second,
//!   so a struggling dependency never sees its load multiplied by the
//!   number of attempts;
//! * the failure is not worth retrying ([`Stop::NotRetryable`]): the
//!   classifier said [`Outcome::Ignored`] (a client-side error).
//!
//! Sleeps use `tokio::time::sleep`, so tests run on a paused clock.
//!
//! ```no_run
//! # async fn fetch() -> Result<u32, std::io::Error> { Ok(1) }
//! # async fn demo(circuit: breakerd_client::Circuit) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use breakerd_client::retry::RetryPolicy;
//!
//! let retry = RetryPolicy::builder().max_attempts(3).base_delay(Duration::from_millis(50)).build()?;
//! let v = retry.run(&circuit, Duration::from_millis(300), || fetch()).await?;
//! # Ok(()) }
//! ```

pub mod budget;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use crate::backoff::{Backoff, Jitter};
pub use budget::{InvalidBudget, RetryBudget};

use crate::{CallError, Circuit, Error, Outcome};

/// Default number of attempts (the first call included).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Most attempts a policy may make.
pub const MAX_ATTEMPTS: u32 = 10;
/// Longest delay a policy may sleep between attempts.
pub const MAX_DELAY_LIMIT: Duration = Duration::from_secs(60);

/// Why a retry policy could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRetry {
    /// `max_attempts` must be within `1..=10`.
    #[error("max_attempts must be within 1..={MAX_ATTEMPTS}, got {0}")]
    MaxAttempts(u32),
    /// `base_delay` must be at least 1 ms and at most `max_delay`.
    #[error("base_delay must be within 1ms..=max_delay ({max:?}), got {base:?}")]
    BaseDelay {
        /// The refused base delay.
        base: Duration,
        /// The max delay it was checked against.
        max: Duration,
    },
    /// `max_delay` must be within 1 ms..=60 s.
    #[error("max_delay must be within 1ms..=60s, got {0:?}")]
    MaxDelay(Duration),
    /// `multiplier` must be finite and within `1.0..=100.0`.
    #[error("multiplier must be within 1.0..=100.0, got {0}")]
    Multiplier(f64),
    /// The retry budget parameters are invalid.
    #[error(transparent)]
    Budget(#[from] InvalidBudget),
}

/// Why retrying stopped. Carried by [`RetryError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every allowed attempt was made.
    Exhausted,
    /// The circuit rejected an attempt (the dependency was not called).
    Rejected,
    /// The circuit is open beyond the next attempt's time, so no retry was
    /// scheduled.
    CircuitOpen,
    /// The retry budget is spent.
    Budget,
    /// The failure was classified [`Outcome::Ignored`]: retrying a
    /// client-side error cannot help.
    NotRetryable,
}

/// A call that did not succeed after retrying: the last error, how many
/// attempts reached the dependency, and why retrying stopped.
#[derive(Debug)]
pub struct RetryError<E> {
    /// The last attempt's error (a rejection if the circuit refused it).
    pub error: CallError<E>,
    /// Attempts that reached the dependency.
    pub attempts: u32,
    /// Why no further attempt was made.
    pub stop: Stop,
}

impl<E> RetryError<E> {
    /// The circuit's rejection, when the last attempt was refused.
    pub fn rejection(&self) -> Option<&Error> {
        self.error.rejection()
    }

    /// True when the circuit was (or was known to be) open.
    pub fn is_circuit_open(&self) -> bool {
        matches!(self.stop, Stop::Rejected | Stop::CircuitOpen)
    }
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.stop {
            Stop::Exhausted => "attempts exhausted",
            Stop::Rejected => "circuit rejected the call",
            Stop::CircuitOpen => "circuit open",
            Stop::Budget => "retry budget spent",
            Stop::NotRetryable => "not retryable",
        };
        write!(
            f,
            "{} after {} attempt(s) ({why})",
            self.error, self.attempts
        )
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// A checked retry policy. Cheap to clone; clones share the retry budget,
/// so keep one policy per dependency.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<Arc<RetryBudget>>,
}

impl Default for RetryPolicy {
    /// 3 attempts, 50 ms base doubling up to 2 s with full jitter, and the
    /// default budget (20 % of calls plus 10 per second over 10 s).
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            budget: Some(Arc::new(RetryBudget::default_budget())),
        }
    }
}

/// Builds a [`RetryPolicy`]; start with [`RetryPolicy::builder`].
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<(f64, u32, Duration)>,
    shared_budget: Option<Arc<RetryBudget>>,
}

impl RetryPolicyBuilder {
    /// Attempts including the first call (1..=10, default 3).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Un-jittered delay before the first retry (default 50 ms).
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.backoff.base = d;
        self
    }

    /// Growth per retry (default 2.0).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.backoff.multiplier = m;
        self
    }

    /// Upper bound of any delay, jitter included (default 2 s).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.backoff.max_delay = d;
        self
    }

    /// Jitter kind (default [`Jitter::Full`]).
    pub fn jitter(mut self, j: Jitter) -> Self {
        self.backoff.jitter = j;
        self
    }

    /// Retry budget: at most `ratio` retries per call plus `min_per_sec`
    /// per second, over a sliding `ttl` (default 0.2, 10, 10 s).
    pub fn budget(mut self, ratio: f64, min_per_sec: u32, ttl: Duration) -> Self {
        self.budget = Some((ratio, min_per_sec, ttl));
        self.shared_budget = None;
        self
    }

    /// Use an existing budget, shared with other policies (one budget per
    /// dependency, several call sites).
    pub fn shared_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.shared_budget = Some(budget);
        self.budget = None;
        self
    }

    /// No retry budget: only `max_attempts` bounds retries. Meant for tests
    /// and for callers that bound load by other means.
    pub fn without_budget(mut self) -> Self {
        self.budget = None;
        self.shared_budget = None;
        self
    }

    /// Check the parameters.
    pub fn build(self) -> Result<RetryPolicy, InvalidRetry> {
        let b = self.backoff;
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(InvalidRetry::MaxAttempts(self.max_attempts));
        }
        if !(Duration::from_millis(1)..=MAX_DELAY_LIMIT).contains(&b.max_delay) {
            return Err(InvalidRetry::MaxDelay(b.max_delay));
        }
        if !(Duration::from_millis(1)..=b.max_delay).contains(&b.base) {
            return Err(InvalidRetry::BaseDelay {
                base: b.base,
                max: b.max_delay,
            });
        }
        if !(1.0..=100.0).contains(&b.multiplier) {
            return Err(InvalidRetry::Multiplier(b.multiplier));
        }
        let budget = match (self.shared_budget, self.budget) {
            (Some(shared), _) => Some(shared),
            (None, Some((ratio, min, ttl))) => Some(Arc::new(RetryBudget::new(ratio, min, ttl)?)),
            (None, None) => None,
        };
        Ok(RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: b,
            budget,
        })
    }
}

impl RetryPolicy {
    /// A builder starting from the defaults of [`RetryPolicy::default`].
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            budget: Some((0.2, 10, Duration::from_secs(10))),
            shared_budget: None,
        }
    }

    /// Attempts including the first call.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff parameters.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The retry budget, if any.
    pub fn budget(&self) -> Option<&Arc<RetryBudget>> {
        self.budget.as_ref()
    }

    /// Run `op` through `circuit`, each attempt under `timeout`, retrying
    /// failures. `Ok` is a success, `Err` and timeouts are failures (and
    /// retried).
    pub async fn run<T, E, F, Fut>(
        &self,
        circuit: &Circuit,
        timeout: Duration,
        op: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(Some(circuit), timeout, default_classify, op)
            .await
    }

    /// The general form of [`run`](Self::run): an optional circuit, and a
    /// classifier deciding what each result says about the dependency.
    /// [`Outcome::Failure`] is recorded and retried; [`Outcome::Ignored`] is
    /// recorded and returned at once (a client-side error); an `Ok`
    /// classified as a failure is retried and, if it is the last attempt,
    /// returned as `Ok`. A timeout is always a retried failure.
    pub async fn run_with<T, E, F, Fut, C>(
        &self,
        circuit: Option<&Circuit>,
        timeout: Duration,
        classify: C,
        mut op: F,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&Result<T, E>) -> Outcome,
    {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
        let mut attempts = 0;
        loop {
            let mut outcome = Outcome::Success;
            let result = match circuit {
                Some(c) => {
                    let classify = |r: &Result<T, E>| {
                        outcome = classify(r);
                        outcome
                    };
                    c.call_with(timeout, classify, &mut op).await
                }
                None => match tokio::time::timeout(timeout, op()).await {
                    Ok(r) => {
                        outcome = classify(&r);
                        r.map_err(CallError::Inner)
                    }
                    Err(_) => Err(CallError::Timeout(timeout)),
                },
            };
            let stop = |error, stop| RetryError {
                error,
                attempts,
                stop,
            };
            if let Err(CallError::Rejected(_)) = &result {
                return result.map_err(|e| stop(e, Stop::Rejected));
            }
            attempts += 1;
            if let Err(CallError::Timeout(_)) = &result {
                outcome = Outcome::Failure;
            }
            let stop = |error, stop| RetryError {
                error,
                attempts,
                stop,
            };
            match outcome {
                Outcome::Success => return result.map_err(|e| stop(e, Stop::NotRetryable)),
                Outcome::Ignored => return result.map_err(|e| stop(e, Stop::NotRetryable)),
                Outcome::Failure => {}
            }
            if attempts >= self.max_attempts {
                return result.map_err(|e| stop(e, Stop::Exhausted));
            }
            let delay = self.backoff.delay(attempts - 1);
            if circuit.is_some_and(|c| open_beyond(c, delay)) {
                return result.map_err(|e| stop(e, Stop::CircuitOpen));
            }
            if let Some(budget) = &self.budget
                && !budget.try_withdraw()
            {
                return result.map_err(|e| stop(e, Stop::Budget));
            }
            tracing::debug!(
                attempt = attempts,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

fn default_classify<T, E>(r: &Result<T, E>) -> Outcome {
    if r.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    }
}

/// Whether the circuit is known to reject calls for longer than `delay`
/// (open with a later deadline, or forced open), so a retry after `delay`
/// would only be rejected.
fn open_beyond(circuit: &Circuit, delay: Duration) -> bool {
    let view = circuit.view();
    if !view.is_rejecting() {
        return false;
    }
    match (view.override_kind, view.open_until) {
        (Some(_), _) | (None, None) => true,
        (None, Some(until)) => until > Instant::now() + delay,
    }
}
