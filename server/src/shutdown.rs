//! The shutdown signal the gRPC streams, the HTTP side port and the
//! background tasks all watch, so that one `send(true)` ends them together.
//!
//! It sits apart from both transports because both need it: neither `grpc`
//! nor `http` has to import the other for it.

use tokio::sync::watch;

/// Says when the server begins shutting down: streams watch it and end.
/// A dropped sender counts as shutdown too.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

impl ShutdownSignal {
    /// A signal and the sender that fires it (`send(true)`).
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Completes once shutdown has begun.
    pub async fn wait(&mut self) {
        // An error means the sender is gone, which is shutdown as well.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}
