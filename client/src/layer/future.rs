//! [`ResponseFuture`]: acquire a permit, call the inner service, record the
//! outcome.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::Service;

use super::classify::Classify;
use super::error::CircuitBreakerError;
use crate::{Error, Permit};

/// The pending decision of the circuit. Boxed because `Circuit::acquire` is
/// an `async fn` whose future cannot be named; on a `CLOSED` circuit it is
/// ready on first poll.
pub(crate) type AcquireFuture = Pin<Box<dyn Future<Output = Result<Permit, Error>> + Send>>;

pin_project! {
    /// The response future of a [`CircuitBreaker`](super::CircuitBreaker).
    ///
    /// It first awaits the circuit's decision; a rejection resolves to
    /// [`CircuitBreakerError::Rejected`] without calling the inner service.
    /// Otherwise the permit travels here with the inner call and is recorded
    /// with the classifier's verdict when the response resolves. Dropping
    /// the future before that drops the permit, which records
    /// [`Outcome::Ignored`](crate::Outcome::Ignored) (a cancelled call says
    /// nothing about the dependency, and a half-open probe lease is handed
    /// back at once).
    pub struct ResponseFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        classifier: C,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Acquiring {
            acquire: AcquireFuture,
            // The service that was polled ready, and the request for it.
            pending: Option<(S, Req)>,
        },
        Calling {
            #[pin]
            future: S::Future,
            permit: Option<Permit>,
        },
        Done,
    }
}

impl<S, Req, C> ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    pub(crate) fn new(acquire: AcquireFuture, service: S, request: Req, classifier: C) -> Self {
        Self {
            state: State::Acquiring {
                acquire,
                pending: Some((service, request)),
            },
            classifier,
        }
    }
}

impl<S, Req, C> Future for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
    C: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, CircuitBreakerError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquiring { acquire, pending } => {
                    let decision = ready!(acquire.as_mut().poll(cx));
                    let (permit, (mut service, request)) = match (decision, pending.take()) {
                        (Ok(permit), Some(pending)) => (permit, pending),
                        (Err(rejection), _) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(CircuitBreakerError::Rejected(rejection)));
                        }
                        // `pending` is only taken on the way out of this
                        // state, so it is always here.
                        (Ok(_), None) => unreachable!("request taken twice"),
                    };
                    let future = service.call(request);
                    this.state.set(State::Calling {
                        future,
                        permit: Some(permit),
                    });
                }
                StateProj::Calling { future, permit } => {
                    let result = ready!(future.poll(cx));
                    if let Some(permit) = permit.take() {
                        permit.record_outcome(this.classifier.classify(result.as_ref()));
                    }
                    this.state.set(State::Done);
                    return Poll::Ready(result.map_err(CircuitBreakerError::Inner));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

impl<S, Req, C> fmt::Debug for ResponseFuture<S, Req, C>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquiring { .. } => "acquiring",
            State::Calling { .. } => "calling",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
