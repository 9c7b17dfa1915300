//! The circuit-breaker layer with `tower::service_fn` and a real circuit
//! deciding locally (see [`crate::retry::testing`]).

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use super::*;
use crate::retry::testing::offline_circuit;
use crate::{Error, Outcome};

type Res = http::Response<()>;

/// A service answering each request with the status in its URI path
/// (`/503`), counting calls.
fn status_service(
    calls: Arc<AtomicU32>,
) -> impl Service<http::Request<()>, Response = Res, Error = std::io::Error, Future: Send> + Clone + Send
{
    service_fn(move |req: http::Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let status = req
            .uri()
            .path()
            .trim_start_matches('/')
            .parse::<u16>()
            .unwrap_or(200);
        async move { Ok(http::Response::builder().status(status).body(()).unwrap()) }
    })
}

fn get(status: u16) -> http::Request<()> {
    http::Request::get(format!("/{status}")).body(()).unwrap()
}

async fn send<S>(svc: &mut S, status: u16) -> Result<S::Response, S::Error>
where
    S: Service<http::Request<()>>,
{
    svc.ready().await?.call(get(status)).await
}

#[tokio::test(start_paused = true)]
async fn server_errors_open_the_circuit_and_rejections_skip_the_service() {
    let (_coord, circuit) = offline_circuit("layer-5xx").await;
    let calls = Arc::new(AtomicU32::new(0));
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(circuit))
        .service(status_service(Arc::clone(&calls)));

    let ok = send(&mut svc, 200).await.unwrap();
    assert_eq!(ok.status(), 200);
    for _ in 0..5 {
        let res = send(&mut svc, 503).await.unwrap();
        assert_eq!(
            res.status(),
            503,
            "a 5xx is still the response, only counted"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);

    let err = send(&mut svc, 200).await.unwrap_err();
    assert!(
        matches!(err, CircuitBreakerError::Rejected(Error::Open { .. })),
        "{err:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        6,
        "the inner service was not called"
    );
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_successes_do_not_trip() {
    let (_coord, circuit) = offline_circuit("layer-4xx").await;
    let calls = Arc::new(AtomicU32::new(0));
    let mut svc = CircuitBreaker::new(status_service(Arc::clone(&calls)), circuit);
    for _ in 0..20 {
        assert_eq!(send(&mut svc, 404).await.unwrap().status(), 404);
    }
    // Four failures, a success (resets the streak), four failures.
    for status in [500, 500, 500, 500, 200, 502, 502, 502, 502] {
        send(&mut svc, status).await.unwrap();
    }
    assert!(
        send(&mut svc, 200).await.is_ok(),
        "never five consecutive failures"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 30);
}

#[tokio::test(start_paused = true)]
async fn tonic_status_errors_are_classified_by_code() {
    let (_coord, circuit) = offline_circuit("layer-grpc").await;
    let svc = service_fn(|code: tonic::Code| async move {
        if code == tonic::Code::Ok {
            Ok(tonic::Response::new(()))
        } else {
            Err(tonic::Status::new(code, "x"))
        }
    });
    let mut svc = CircuitBreaker::new(svc, circuit);
    for _ in 0..10 {
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(tonic::Code::InvalidArgument)
            .await
            .unwrap_err();
        assert!(
            matches!(err, CircuitBreakerError::Inner(ref s) if s.code() == tonic::Code::InvalidArgument)
        );
    }
    for _ in 0..5 {
        svc.ready()
            .await
            .unwrap()
            .call(tonic::Code::Unavailable)
            .await
            .unwrap_err();
    }
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(tonic::Code::Ok)
        .await
        .unwrap_err();
    assert!(err.rejection().is_some_and(Error::is_open));
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_decides() {
    let (_coord, circuit) = offline_circuit("layer-custom").await;
    let calls = Arc::new(AtomicU32::new(0));
    // Treat 429 as a failure (the dependency is shedding load).
    let classify = |r: Result<&Res, &std::io::Error>| match r {
        Ok(res) if res.status() == 429 || res.status().is_server_error() => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(circuit).with_classifier(classify))
        .service(status_service(Arc::clone(&calls)));
    for _ in 0..5 {
        send(&mut svc, 429).await.unwrap();
    }
    assert!(send(&mut svc, 200).await.unwrap_err().rejection().is_some());
}

/// Trip the circuit, then wait out the open duration (60 s plus at most
/// 10 % jitter) so that it is half-open with a single probe to give.
async fn half_open(svc: &mut (impl Service<http::Request<()>, Response = Res> + Send)) {
    for _ in 0..5 {
        let _ = send(svc, 503).await;
    }
    assert!(send(svc, 200).await.is_err(), "open");
    tokio::time::advance(Duration::from_secs(67)).await;
}

#[tokio::test(start_paused = true)]
async fn poll_ready_does_not_take_a_permit() {
    let (_coord, circuit) = offline_circuit("layer-ready").await;
    let calls = Arc::new(AtomicU32::new(0));
    let mut svc = CircuitBreaker::new(status_service(Arc::clone(&calls)), circuit);
    half_open(&mut svc).await;
    // Readiness checks on many handles, never followed by a call.
    for _ in 0..10 {
        let mut other = svc.clone();
        let ready = poll_fn(|cx| match other.poll_ready(cx) {
            Poll::Ready(r) => Poll::Ready(r.is_ok()),
            Poll::Pending => panic!("service_fn is always ready"),
        })
        .await;
        assert!(ready);
    }
    // The single half-open probe is still there for a real call.
    assert_eq!(send(&mut svc, 200).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_future_hands_the_probe_back() {
    let (_coord, circuit) = offline_circuit("layer-drop").await;
    let calls = Arc::new(AtomicU32::new(0));
    let hang = Arc::new(AtomicU32::new(0));
    let inner = {
        let calls = Arc::clone(&calls);
        let hang = Arc::clone(&hang);
        service_fn(move |req: http::Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let stall = hang.load(Ordering::SeqCst) == 1;
            let status = req
                .uri()
                .path()
                .trim_start_matches('/')
                .parse::<u16>()
                .unwrap_or(200);
            async move {
                if stall {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::io::Error>(http::Response::builder().status(status).body(()).unwrap())
            }
        })
    };
    let mut svc = CircuitBreaker::new(inner, circuit);
    half_open(&mut svc).await;

    // Take the probe with a call that never finishes, then abandon it.
    hang.store(1, Ordering::SeqCst);
    let mut fut = Box::pin(svc.ready().await.unwrap().call(get(200)));
    assert!(poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx).is_pending())).await);
    let other = svc.ready().await.unwrap().call(get(200)).await;
    assert!(
        matches!(
            other,
            Err(CircuitBreakerError::Rejected(Error::Open { .. }))
        ),
        "the probe is taken while the call is in flight: {other:?}"
    );
    drop(fut);

    // Dropping recorded IGNORED, which returned the lease at once: the next
    // call is the probe, and its success closes the circuit.
    hang.store(0, Ordering::SeqCst);
    assert_eq!(send(&mut svc, 200).await.unwrap().status(), 200);
    assert!(send(&mut svc, 200).await.is_ok(), "closed again");
}

/// The layer fits the main use: guarding a tonic `Channel` under a
/// generated gRPC client, with futures that can cross threads.
#[allow(dead_code)]
fn wraps_a_tonic_channel(channel: tonic::transport::Channel, circuit: crate::Circuit) {
    fn send<T: Send>(_: &T) {}
    let svc = CircuitBreaker::new(channel, circuit);
    let mut probe = svc.clone();
    send(&probe.call(http::Request::new(tonic::body::Body::empty())));
    let _client = breakerd_proto::v1::breaker_client::BreakerClient::new(svc);
}
