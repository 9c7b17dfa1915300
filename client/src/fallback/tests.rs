//! Fallback tiers on a paused clock, alone and composed with a real circuit
//! (deciding locally, see [`crate::retry::testing`]) and with retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;
use crate::retry::testing::{fail, offline_circuit};
use crate::retry::{Jitter, RetryPolicy};

#[derive(Debug, PartialEq)]
struct Down;

async fn down() -> Result<u32, Down> {
    Err(Down)
}

const TTL: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn tiers_answer_in_order() {
    let alt_up = Arc::new(AtomicU32::new(1));
    let fb = {
        let alt_up = Arc::clone(&alt_up);
        Fallback::new()
            .last_known_good(TTL)
            .static_value(0)
            .alternative(move |key: &'static str| {
                let up = alt_up.load(Ordering::SeqCst) == 1;
                async move {
                    if up {
                        Ok(key.len() as u32 * 100)
                    } else {
                        Err("replica down")
                    }
                }
            })
    };

    assert_eq!(
        fb.run("abc", async { Ok::<_, Down>(7) }).await,
        Ok((7, Source::Primary))
    );

    tokio::time::advance(Duration::from_secs(10)).await;
    let (v, src) = fb.run("abc", down()).await.unwrap();
    assert_eq!(
        (v, src),
        (
            7,
            Source::LastKnownGood {
                age: Duration::from_secs(10)
            }
        )
    );

    // Past the TTL the cache is silent: the alternative answers.
    tokio::time::advance(TTL).await;
    assert_eq!(fb.run("abc", down()).await, Ok((300, Source::Alternative)));

    // The alternative fails too: the static value.
    alt_up.store(0, Ordering::SeqCst);
    assert_eq!(fb.run("abc", down()).await, Ok((0, Source::Static)));
    assert!(Source::Static.is_fallback() && !Source::Primary.is_fallback());
}

#[tokio::test(start_paused = true)]
async fn without_tiers_the_primary_error_is_returned() {
    let fb: Fallback<&str, u32> = Fallback::new().last_known_good(TTL);
    assert_eq!(fb.run("k", down()).await, Err(Down), "nothing cached yet");
    fb.run("k", async { Ok::<_, Down>(1) }).await.unwrap();
    tokio::time::advance(TTL + Duration::from_millis(1)).await;
    assert_eq!(fb.run("k", down()).await, Err(Down), "expired");
}

#[tokio::test(start_paused = true)]
async fn every_primary_success_refreshes_the_cache() {
    let fb = Fallback::new().last_known_good(TTL);
    fb.run("k", async { Ok::<_, Down>(1) }).await.unwrap();
    tokio::time::advance(Duration::from_secs(20)).await;
    fb.run("k", async { Ok::<_, Down>(2) }).await.unwrap();
    tokio::time::advance(Duration::from_secs(20)).await;
    // 40 s after the first answer, 20 s after the second.
    assert_eq!(
        fb.run("k", down()).await,
        Ok((
            2,
            Source::LastKnownGood {
                age: Duration::from_secs(20)
            }
        ))
    );
    // Keys do not mix.
    assert_eq!(fb.run("other", down()).await, Err(Down));
}

#[tokio::test(start_paused = true)]
async fn the_cache_is_bounded() {
    let fb = Fallback::new().last_known_good(TTL).max_entries(2);
    for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
        fb.run(k, async move { Ok::<_, Down>(v) }).await.unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(
        fb.run("a", down()).await,
        Err(Down),
        "the oldest was evicted"
    );
    assert_eq!(fb.run("c", down()).await.map(|(v, _)| v), Ok(3));
}

#[tokio::test(start_paused = true)]
async fn a_circuit_rejection_skips_the_primary() {
    let (_coord, circuit) = offline_circuit("fallback-open").await;
    let fb = Fallback::new().last_known_good(TTL).static_value(0);
    let (v, src) = fb
        .call(&circuit, "k", Duration::from_millis(100), || async {
            Ok::<_, Down>(5)
        })
        .await
        .unwrap();
    assert_eq!((v, src), (5, Source::Primary));

    fail(&circuit, 5).await;
    let calls = AtomicU32::new(0);
    let (v, src) = fb
        .call(&circuit, "k", Duration::from_millis(100), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Down>(6)
        })
        .await
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the primary was not called"
    );
    assert_eq!(
        (v, src),
        (
            5,
            Source::LastKnownGood {
                age: Duration::ZERO
            }
        )
    );

    // With nothing cached for the key, the static value.
    let (v, src) = fb
        .call(&circuit, "new", Duration::from_millis(100), || async {
            Ok::<_, Down>(6)
        })
        .await
        .unwrap();
    assert_eq!((v, src), (0, Source::Static));
}

#[tokio::test(start_paused = true)]
async fn retries_then_fallback() {
    let (_coord, circuit) = offline_circuit("fallback-retry").await;
    let retry = RetryPolicy::builder()
        .max_attempts(3)
        .base_delay(Duration::from_millis(10))
        .jitter(Jitter::None)
        .without_budget()
        .build()
        .unwrap();
    let fb = Fallback::new().static_value(-1);
    let calls = AtomicU32::new(0);
    let answer = fb
        .run(
            "k",
            retry.run(&circuit, Duration::from_millis(100), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<i32, _>(Down)
            }),
        )
        .await
        .unwrap();
    assert_eq!(answer, (-1, Source::Static));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "all attempts before falling back"
    );
}
