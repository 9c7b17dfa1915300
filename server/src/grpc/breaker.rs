//! `breakerd.v1.Breaker`: Acquire, Report, ReportStream and Watch.

use std::{collections::VecDeque, pin::Pin, sync::Arc};

use breakerd_proto::v1::{self as pb, breaker_server::Breaker};
use futures_util::{Stream, StreamExt, stream};
use tonic::{Request, Response, Status, Streaming};

use super::{
    convert::{
        acquire_to_proto, outcomes_from_proto, report_to_proto, status_from_core,
        status_from_refused,
    },
    limits::{ClientId, ClientLimits},
    principal::Principal,
    streams::{
        WATCH_PAGE_BYTES, WATCH_PAGE_CIRCUITS, WatchLimits, WatchSlot, WatchStreams,
        watch_page_to_proto,
    },
};
use breakerd_core::{Registry, Subscription};

use crate::shutdown::ShutdownSignal;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The data-plane service.
#[derive(Debug, Clone)]
pub struct BreakerService {
    registry: Arc<Registry>,
    shutdown: ShutdownSignal,
    limits: Arc<ClientLimits>,
    watch_streams: Arc<WatchStreams>,
    /// Most bytes of snapshots in one Watch message.
    page_bytes: usize,
}

impl BreakerService {
    /// A service answering from `registry`, with no per-client limits; its
    /// streams end on `shutdown`.
    pub fn new(registry: Arc<Registry>, shutdown: ShutdownSignal) -> Self {
        Self {
            registry,
            shutdown,
            limits: ClientLimits::disabled(),
            watch_streams: WatchStreams::new(WatchLimits {
                max_streams: 0,
                max_streams_per_client: 0,
                max_watch_all_streams: 0,
            }),
            page_bytes: WATCH_PAGE_BYTES,
        }
    }

    /// The same service with Watch streams counted against
    /// `watch_streams`, and their messages kept well under
    /// `max_message_bytes`.
    #[must_use]
    pub fn with_watch_streams(
        mut self,
        watch_streams: Arc<WatchStreams>,
        max_message_bytes: usize,
    ) -> Self {
        self.watch_streams = watch_streams;
        self.page_bytes = WATCH_PAGE_BYTES.min(max_message_bytes / 4).max(1);
        self
    }

    /// The same service under per-client `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: Arc<ClientLimits>) -> Self {
        self.limits = limits;
        self
    }
}

/// How streams end when the server begins shutting down.
pub(crate) fn shutting_down() -> Status {
    Status::unavailable("breakerd is shutting down; reconnect")
}

/// Applies a batch. The core answers a batch that moved a circuit (e.g.
/// tripped it open) only once that state is durable, so an acknowledged
/// trip survives a crash.
async fn report(
    registry: &Registry,
    principal: Principal,
    req: &pb::ReportRequest,
) -> Result<pb::ReportResponse, Status> {
    let outcomes = outcomes_from_proto(req)?;
    let s = registry
        .report(&principal.quorum_node(&req.node_id), &outcomes)
        .await
        .map_err(status_from_core)?;
    Ok(report_to_proto(&s))
}

#[tonic::async_trait]
impl Breaker for BreakerService {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let client = ClientId::of(&request, &request.get_ref().node_id);
        self.limits.check_request(&client)?;
        let req = request.into_inner();
        let budget = self.limits.new_circuit_budget(&client);
        let node = client.principal().quorum_node(&req.node_id);
        let out = self
            .registry
            .acquire_admitted(&req.circuit, &node, &budget)
            .map_err(status_from_refused)?;
        Ok(Response::new(acquire_to_proto(&out)))
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let client = ClientId::of(&request, &request.get_ref().node_id);
        self.limits.check_request(&client)?;
        report(&self.registry, client.principal(), request.get_ref())
            .await
            .map(Response::new)
    }

    type ReportStreamStream = BoxStream<pb::ReportResponse>;

    async fn report_stream(
        &self,
        request: Request<Streaming<pb::ReportRequest>>,
    ) -> Result<Response<Self::ReportStreamStream>, Status> {
        struct State {
            inbound: Streaming<pb::ReportRequest>,
            registry: Arc<Registry>,
            shutdown: ShutdownSignal,
            limits: Arc<ClientLimits>,
            principal: Principal,
            done: bool,
        }
        // Every batch is one request of the stream's client.
        let principal = Principal::of(&request);
        let state = State {
            inbound: request.into_inner(),
            registry: self.registry.clone(),
            shutdown: self.shutdown.clone(),
            limits: self.limits.clone(),
            principal,
            done: false,
        };
        // One response per batch, in order; the first error ends the stream.
        let out = stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let next = tokio::select! {
                biased;
                () = st.shutdown.wait() => Some(Err(shutting_down())),
                msg = st.inbound.message() => match msg {
                    Ok(Some(req)) => Some(
                        match st.limits.check_request(&ClientId::new(st.principal, &req.node_id)) {
                            Ok(()) => report(&st.registry, st.principal, &req).await,
                            Err(refused) => Err(refused),
                        },
                    ),
                    Ok(None) => None,
                    Err(status) => Some(Err(status)),
                },
            };
            let item = next?;
            st.done = item.is_err();
            Some((item, st))
        });
        Ok(Response::new(Box::pin(out)))
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let client = ClientId::of(&request, &request.get_ref().node_id);
        self.limits.check_request(&client)?;
        let all = request.get_ref().circuits.is_empty();
        let slot = self.watch_streams.open_slot(client.principal(), all)?;
        let req = request.into_inner();
        breakerd_core::validate_node_id(&req.node_id).map_err(status_from_core)?;
        let budget = self.limits.new_circuit_budget(&client);
        let sub = self
            .registry
            .watch_admitted(&req.circuits, &budget)
            .map_err(status_from_refused)?;
        tracing::debug!(node_id = %req.node_id, circuits = req.circuits.len(), "watch started");
        struct State {
            sub: Subscription,
            shutdown: ShutdownSignal,
            /// Messages cut from the last page, not sent yet.
            ready: VecDeque<pb::WatchEvent>,
            page_bytes: usize,
            done: bool,
            _slot: WatchSlot,
        }
        let state = State {
            sub,
            shutdown: self.shutdown.clone(),
            ready: VecDeque::new(),
            page_bytes: self.page_bytes,
            done: false,
            _slot: slot,
        };
        // Pages are read from the core only as the transport takes them, so
        // a watcher that does not read holds one page, never a snapshot.
        let out = stream::unfold(state, |mut st| async move {
            if let Some(ev) = st.ready.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            tokio::select! {
                biased;
                () = st.shutdown.wait() => {
                    st.done = true;
                    Some((Err(shutting_down()), st))
                }
                page = st.sub.next_page(WATCH_PAGE_CIRCUITS) => {
                    st.ready.extend(watch_page_to_proto(page?, st.page_bytes));
                    let ev = st.ready.pop_front()?;
                    Some((Ok(ev), st))
                }
            }
        });
        Ok(Response::new(out.boxed()))
    }
}
