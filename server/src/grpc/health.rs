//! `grpc.health.v1.Health` that lets go on shutdown.
//!
//! tonic-health's own Watch streams never end, so one watching client would
//! hold a terminating coordinator for the whole drain. This wrapper answers
//! exactly like tonic-health, but once shutdown begins each Watch stream
//! first delivers the pending `NOT_SERVING` and then ends with
//! `UNAVAILABLE`, like the API's own streams.

use std::pin::Pin;

use futures_util::{Stream, StreamExt, stream};
use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{HealthCheckRequest, HealthCheckResponse, health_server::Health},
    server::{HealthReporter, HealthService},
};

use crate::shutdown::ShutdownSignal;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// tonic-health's service, with Watch streams that end on shutdown.
#[derive(Debug)]
pub struct DrainingHealth {
    inner: HealthService,
    shutdown: ShutdownSignal,
}

impl DrainingHealth {
    /// Serves the statuses of `reporter`.
    pub fn new(reporter: HealthReporter, shutdown: ShutdownSignal) -> Self {
        Self {
            inner: HealthService::from_health_reporter(reporter),
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let statuses = self.inner.watch(request).await?.into_inner();
        let state = (statuses, self.shutdown.clone(), false);
        let out = stream::unfold(state, |(mut statuses, mut shutdown, done)| async move {
            if done {
                return None;
            }
            // Statuses first: NOT_SERVING is published before the shutdown
            // signal fires, so it is always delivered before the end.
            tokio::select! {
                biased;
                item = statuses.next() => item.map(|i| (i, (statuses, shutdown, false))),
                () = shutdown.wait() => Some((Err(super::breaker::shutting_down()), (statuses, shutdown, true))),
            }
        });
        Ok(Response::new(Box::pin(out)))
    }
}
