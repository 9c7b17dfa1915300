//! Behaviour of [`RetryPolicy`] on a paused clock, against a real circuit
//! deciding locally (see [`testing`](super::testing)).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::testing::{fail, offline_circuit};
use super::*;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// 100 ms, 200 ms, 400 ms... with no jitter and no budget.
fn exact(attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .max_attempts(attempts)
        .base_delay(MS(100))
        .multiplier(2.0)
        .max_delay(MS(1_000))
        .jitter(Jitter::None)
        .without_budget()
        .build()
        .unwrap()
}

#[derive(Debug, PartialEq)]
struct Down;

#[tokio::test(start_paused = true)]
async fn three_attempts_wait_the_backoff_delays() {
    let (_coord, circuit) = offline_circuit("retry-delays").await;
    let t0 = Instant::now();
    let seen = Mutex::new(Vec::new());
    let err = exact(3)
        .run(&circuit, MS(50), || async {
            seen.lock().push(Instant::now() - t0);
            Err::<(), _>(Down)
        })
        .await
        .unwrap_err();
    assert_eq!(*seen.lock(), [MS(0), MS(100), MS(300)]);
    assert_eq!(err.attempts, 3);
    assert_eq!(err.stop, Stop::Exhausted);
    assert!(matches!(err.error, CallError::Inner(Down)));
}

#[tokio::test(start_paused = true)]
async fn a_later_success_is_returned() {
    let (_coord, circuit) = offline_circuit("retry-later-success").await;
    let calls = AtomicU32::new(0);
    let v = exact(3)
        .run(&circuit, MS(50), || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(Down),
                n => Ok(n),
            }
        })
        .await
        .unwrap();
    assert_eq!(v, 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_as_failures() {
    let (_coord, circuit) = offline_circuit("retry-timeouts").await;
    let t0 = Instant::now();
    let err = exact(3)
        .run(&circuit, MS(50), || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, Down>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err.error, CallError::Timeout(d) if d == MS(50)));
    assert_eq!(err.attempts, 3);
    // Three timed-out attempts and two delays.
    assert_eq!(Instant::now() - t0, MS(50 + 100 + 50 + 200 + 50));
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_never_called_nor_retried() {
    let (_coord, circuit) = offline_circuit("retry-open").await;
    fail(&circuit, 5).await;
    let calls = AtomicU32::new(0);
    let t0 = Instant::now();
    let err = exact(3)
        .run(&circuit, MS(50), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Down>(())
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(err.attempts, 0);
    assert_eq!(err.stop, Stop::Rejected);
    assert!(err.is_circuit_open());
    assert!(
        matches!(err.rejection(), Some(Error::Open { retry_after, .. }) if *retry_after >= Duration::from_secs(59))
    );
    assert_eq!(Instant::now(), t0, "a rejection returns at once");
}

#[tokio::test(start_paused = true)]
async fn retrying_stops_when_a_failure_trips_the_circuit() {
    let (_coord, circuit) = offline_circuit("retry-trips").await;
    fail(&circuit, 4).await;
    let calls = AtomicU32::new(0);
    let err = exact(3)
        .run(&circuit, MS(50), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Down)
        })
        .await
        .unwrap_err();
    // The first attempt was the 5th consecutive failure: the circuit opened
    // and the retry was refused instead of reaching the dependency.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.attempts, 1);
    assert_eq!(err.stop, Stop::Rejected);
    assert!(err.rejection().is_some_and(Error::is_open));
}

#[tokio::test(start_paused = true)]
async fn client_side_errors_are_not_retried() {
    let calls = AtomicU32::new(0);
    let not_found = |r: &Result<(), Down>| {
        if r.is_ok() {
            Outcome::Success
        } else {
            Outcome::Ignored
        }
    };
    let err = exact(3)
        .run_with(None, MS(50), not_found, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Down)
        })
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(err.stop, Stop::NotRetryable);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_retries() {
    // No share of calls, a floor of 1 retry per second over 1 s: one retry
    // in the whole window.
    let policy = RetryPolicy::builder()
        .max_attempts(5)
        .base_delay(MS(10))
        .jitter(Jitter::None)
        .budget(0.0, 1, Duration::from_secs(1))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let op = || {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Down)
        }
    };
    let always_fail = |r: &Result<(), Down>| {
        if r.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    };

    let first = policy
        .run_with(None, MS(50), always_fail, op)
        .await
        .unwrap_err();
    assert_eq!(
        (first.attempts, first.stop),
        (2, Stop::Budget),
        "the floor paid for one retry"
    );
    let second = policy
        .run_with(None, MS(50), always_fail, op)
        .await
        .unwrap_err();
    assert_eq!(
        (second.attempts, second.stop),
        (1, Stop::Budget),
        "nothing left"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Once the window has moved on, the floor pays again.
    tokio::time::advance(Duration::from_secs(2)).await;
    let third = policy
        .run_with(None, MS(50), always_fail, op)
        .await
        .unwrap_err();
    assert_eq!(third.attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_by_clones() {
    let policy = RetryPolicy::builder()
        .base_delay(MS(10))
        .budget(0.0, 1, Duration::from_secs(1))
        .build()
        .unwrap();
    let clone = policy.clone();
    let op = || async { Err::<(), _>(Down) };
    assert_eq!(
        policy
            .run_with(None, MS(50), |_: &Result<(), Down>| Outcome::Failure, op)
            .await
            .unwrap_err()
            .attempts,
        2
    );
    assert_eq!(
        clone
            .run_with(None, MS(50), |_: &Result<(), Down>| Outcome::Failure, op)
            .await
            .unwrap_err()
            .attempts,
        1
    );
}

#[test]
fn builder_checks_every_parameter() {
    assert!(RetryPolicy::builder().build().is_ok());
    assert_eq!(RetryPolicy::builder().build().unwrap().max_attempts(), 3);
    let b = RetryPolicy::builder;
    assert_eq!(
        b().max_attempts(0).build().unwrap_err(),
        InvalidRetry::MaxAttempts(0)
    );
    assert_eq!(
        b().max_attempts(11).build().unwrap_err(),
        InvalidRetry::MaxAttempts(11)
    );
    assert!(b().max_attempts(1).build().is_ok());
    assert!(b().max_attempts(10).build().is_ok());
    assert!(matches!(
        b().base_delay(MS(500)).max_delay(MS(100)).build(),
        Err(InvalidRetry::BaseDelay { .. })
    ));
    assert!(matches!(
        b().base_delay(Duration::ZERO).build(),
        Err(InvalidRetry::BaseDelay { .. })
    ));
    assert!(matches!(
        b().max_delay(Duration::from_secs(3600)).build(),
        Err(InvalidRetry::MaxDelay(_))
    ));
    assert!(matches!(
        b().multiplier(0.5).build(),
        Err(InvalidRetry::Multiplier(_))
    ));
    assert!(matches!(
        b().multiplier(f64::NAN).build(),
        Err(InvalidRetry::Multiplier(_))
    ));
    assert!(matches!(
        b().budget(1.5e3, 0, Duration::from_secs(10)).build(),
        Err(InvalidRetry::Budget(InvalidBudget::Ratio(_)))
    ));
}
