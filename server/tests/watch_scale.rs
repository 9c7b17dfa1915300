//! Watch at the default cap of 100k circuits, over real gRPC on loopback:
//! the snapshot arrives in pages that each fit well inside the 4 MiB a
//! default client accepts, the pages hold every circuit once, and changes
//! made while it was paged out follow it. Also: the Watch stream caps, and
//! memory held by watchers that never read.

use std::{collections::HashSet, sync::Arc, time::Duration};

use breakerd::grpc::{self, ClientLimits, ShutdownSignal, WatchLimits, WatchStreams};
use breakerd_core::{PolicyResolver, Registry, RegistryConfig};
use breakerd_proto::v1::{self as pb, breaker_client::BreakerClient};
use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::{Channel, Server};

const CIRCUITS: usize = 100_000;
/// Generous: a debug build on a loaded machine. Nothing is timed.
const DEADLINE: Duration = Duration::from_secs(120);

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A registry with `n` circuits, served on a loopback port with the given
/// Watch caps; returns it and a connected channel.
/// The last element ends the served streams when dropped: keep it.
async fn serve(
    n: usize,
    limits: WatchLimits,
) -> (
    Arc<Registry>,
    Channel,
    Arc<WatchStreams>,
    tokio::sync::watch::Sender<bool>,
) {
    let registry = Registry::new(
        RegistryConfig {
            max_circuits: n + 10,
            operator_reserve: 0,
            ..RegistryConfig::default()
        },
        PolicyResolver::new(Default::default(), Vec::new()).unwrap(),
    );
    for i in 0..n {
        registry.acquire(&format!("svc-{i:06}"), "").unwrap();
    }
    let (stop_tx, stop) = ShutdownSignal::new();
    let streams = WatchStreams::new(limits);
    let (breaker, _admin) = grpc::services(
        registry.clone(),
        4 * 1024 * 1024,
        ClientLimits::disabled(),
        streams.clone(),
        stop,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        Server::builder()
            .add_service(breaker)
            .serve_with_incoming(incoming),
    );
    let channel = within(
        "connecting",
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .unwrap();
    (registry, channel, streams, stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_all_at_100k_circuits_arrives_in_bounded_pages() {
    let (registry, channel, _, _stop) = serve(CIRCUITS, WatchLimits::default()).await;
    // A default client: 4 MiB messages at most.
    let mut client = BreakerClient::new(channel);
    let mut stream = within(
        "the watch",
        client.watch(pb::WatchRequest {
            circuits: vec![],
            node_id: "dashboard".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let mut seen = HashSet::new();
    let mut pages = 0;
    let mut largest = 0;
    loop {
        let ev = within("a snapshot page", stream.message())
            .await
            .unwrap()
            .expect("the stream goes on");
        assert!(ev.initial, "a change before the snapshot was whole");
        largest = largest.max(ev.encoded_len());
        pages += 1;
        for c in &ev.circuits {
            assert!(seen.insert(c.name.clone()), "{} sent twice", c.name);
        }
        if pages == 1 {
            // A change while the snapshot is being paged out.
            registry.acquire("zz-late", "").unwrap();
        }
        if !ev.more {
            break;
        }
    }
    assert_eq!(seen.len(), CIRCUITS);
    assert!(
        largest <= 1024 * 1024 + 64 * 1024,
        "largest page {largest} bytes"
    );
    assert!(pages > 1, "{pages} pages");
    let change = within("the change", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(!change.initial && !change.more);
    assert_eq!(change.circuits[0].name, "zz-late");
    println!("watch-all of {CIRCUITS} circuits: {pages} pages, largest {largest} bytes");
}

#[tokio::test]
async fn watch_streams_past_the_cap_are_resource_exhausted_and_closing_one_frees_a_place() {
    let (_registry, channel, streams, _stop) = serve(
        3,
        WatchLimits {
            max_streams: 10,
            max_streams_per_client: 2,
            max_watch_all_streams: 0,
        },
    )
    .await;
    let mut client = BreakerClient::new(channel);
    let watch = || pb::WatchRequest {
        circuits: vec!["svc-000001".into()],
        node_id: "n".into(),
    };
    let first = client.watch(watch()).await.unwrap().into_inner();
    let _second = client.watch(watch()).await.unwrap().into_inner();
    let err = client.watch(watch()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("too many Watch streams from peer 127.0.0.1: 2 are open"),
        "{err:?}"
    );
    drop(first);
    // The server sees the reset of the dropped stream soon; wait for it on
    // the count, not on a clock.
    within("the stream to close", async {
        while streams.open() > 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    client.watch(watch()).await.unwrap();
}
