"""The Breaker, its Guard context manager and the errors callers match on."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, Callable, Optional, Tuple, Type, TypeVar, Union

import grpc

try:
    from breakerd.v1 import breakerd_pb2 as _pb
    from breakerd.v1 import breakerd_pb2_grpc as _rpc
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "breakerd_client needs the generated breakerd.v1 stubs on sys.path; generate them with "
        "`python -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT "
        "proto/breakerd/v1/breakerd.proto` and add OUT to sys.path"
    ) from e

__all__ = ["Breaker", "BreakerError", "CircuitOpenError", "CoordinatorError", "CoordinatorUnavailableError", "Guard"]

log = logging.getLogger("breakerd_client")

F = TypeVar("F", bound=Callable[..., Any])

_STATE_NAMES = {
    _pb.CIRCUIT_STATE_CLOSED: "closed",
    _pb.CIRCUIT_STATE_OPEN: "open",
    _pb.CIRCUIT_STATE_HALF_OPEN: "half_open",
}
_REJECT_NAMES = {
    _pb.REJECT_REASON_OPEN: "open",
    _pb.REJECT_REASON_PROBES_EXHAUSTED: "probes_exhausted",
    _pb.REJECT_REASON_FORCED_OPEN: "forced_open",
}


class BreakerError(Exception):
    """Base class of the errors this module raises."""


class CircuitOpenError(BreakerError):
    """The coordinator turned the call away; the dependency was not called.

    ``retry_after`` is the number of seconds until asking again is worth it
    (0.0 when the coordinator gave no hint). ``state`` is ``"open"`` or
    ``"half_open"``; ``reason`` is ``"open"``, ``"probes_exhausted"`` or
    ``"forced_open"``.
    """

    def __init__(self, circuit: str, retry_after: float, state: str = "open", reason: str = "open"):
        super().__init__(f"circuit {circuit!r} is {state} ({reason}); retry after {retry_after:.3f}s")
        self.circuit = circuit
        self.retry_after = retry_after
        self.state = state
        self.reason = reason


class CoordinatorError(BreakerError):
    """The coordinator answered with an error status instead of a decision
    (e.g. ``INVALID_ARGUMENT`` for a bad circuit name). The dependency was
    not called. ``code`` is the ``grpc.StatusCode``."""

    def __init__(self, circuit: str, code: grpc.StatusCode, details: str):
        super().__init__(f"breakerd did not decide for circuit {circuit!r}: {code.name}: {details}")
        self.circuit = circuit
        self.code = code
        self.details = details


class CoordinatorUnavailableError(CoordinatorError):
    """The coordinator could not be reached or did not answer within the
    timeout. The dependency was not called.

    Construct the Breaker with ``fail_open=True`` to let calls through
    instead.
    """


class Guard:
    """One permitted call: what ``Breaker.guard`` yields.

    On leaving the ``with`` block the outcome is reported: SUCCESS on normal
    exit, FAILURE when an exception in ``failure_on`` escaped, IGNORED for any
    other exception (``KeyboardInterrupt``, cancellation...). Call
    :meth:`success`, :meth:`failure` or :meth:`ignore` inside the block to
    decide yourself (e.g. an HTTP 503 returned without an exception).
    """

    def __init__(self, breaker: "Breaker", circuit: str, failure_on: Tuple[Type[BaseException], ...]):
        self._breaker = breaker
        self.circuit = circuit
        self._failure_on = failure_on
        self._outcome: Optional[int] = None
        self._started: Optional[float] = None
        #: Generation the call was admitted under (0 when admitted without
        #: the coordinator, see ``fail_open``).
        self.generation = 0
        #: Probe lease in HALF_OPEN, else 0.
        self.lease_id = 0
        #: ``"closed"``, ``"open"``, ``"half_open"``, or ``"unknown"`` when
        #: admitted without the coordinator.
        self.state = "unknown"
        #: True when the coordinator could not be asked and ``fail_open``
        #: let the call through; nothing is reported then.
        self.unguarded = False

    def success(self) -> None:
        """Report SUCCESS whatever happens next."""
        self._outcome = _pb.OUTCOME_SUCCESS

    def failure(self) -> None:
        """Report FAILURE even if the block exits normally."""
        self._outcome = _pb.OUTCOME_FAILURE

    def ignore(self) -> None:
        """Report IGNORED: the result says nothing about the dependency.
        Gives back a probe lease without counting anything."""
        self._outcome = _pb.OUTCOME_IGNORED

    def __enter__(self) -> "Guard":
        self._breaker._acquire_into(self)
        self._started = self._breaker._clock()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        outcome = self._outcome
        if outcome is None:
            if exc_type is None:
                outcome = _pb.OUTCOME_SUCCESS
            elif issubclass(exc_type, self._failure_on):
                outcome = _pb.OUTCOME_FAILURE
            else:
                outcome = _pb.OUTCOME_IGNORED
        started = self._started if self._started is not None else self._breaker._clock()
        latency_s = max(self._breaker._clock() - started, 0.0)
        if not self.unguarded:
            self._breaker._report(self, outcome, latency_s)
        return False  # never swallow the caller's exception


class Breaker:
    """A connection to breakerd for one node.

    ``channel_or_target`` is a ``grpc.Channel`` (not closed by
    :meth:`close`) or a target such as ``"127.0.0.1:50051"`` (an insecure
    channel owned by this Breaker). ``timeout`` bounds every call to the
    coordinator, in seconds: an application call never waits longer than
    that for a decision. ``token`` is sent as ``authorization: Bearer``.
    ``fail_open`` decides what happens when the coordinator cannot answer in
    time: raise :class:`CoordinatorUnavailableError` (default) or let the
    call through unreported. ``clock`` (seconds, monotonic) is for tests.
    """

    def __init__(
        self,
        channel_or_target: Union[grpc.Channel, str],
        node_id: str,
        timeout: float = 0.05,
        *,
        token: Optional[str] = None,
        fail_open: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        if isinstance(channel_or_target, str):
            self._channel = grpc.insecure_channel(channel_or_target)
            self._owns_channel = True
        else:
            self._channel = channel_or_target
            self._owns_channel = False
        self._stub = _rpc.BreakerStub(self._channel)
        self.node_id = node_id
        self.timeout = timeout
        self.fail_open = fail_open
        self._clock = clock
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    # -- public API -------------------------------------------------------

    def guard(self, circuit: str, *, failure_on: Tuple[Type[BaseException], ...] = (Exception,)) -> Guard:
        """A context manager that acquires on entry (raising
        :class:`CircuitOpenError` when rejected) and reports on exit."""
        return Guard(self, circuit, failure_on)

    def protect(self, circuit: str, *, failure_on: Tuple[Type[BaseException], ...] = (Exception,)) -> Callable[[F], F]:
        """A decorator running the function under :meth:`guard`."""

        def decorate(fn: F) -> F:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self.guard(circuit, failure_on=failure_on):
                    return fn(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate

    def call(self, circuit: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` under :meth:`guard`."""
        with self.guard(circuit):
            return fn(*args, **kwargs)

    def close(self) -> None:
        """Closes the channel if this Breaker created it."""
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> "Breaker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- wire -------------------------------------------------------------

    def _acquire_into(self, guard: Guard) -> None:
        try:
            resp = self._stub.Acquire(
                _pb.AcquireRequest(circuit=guard.circuit, node_id=self.node_id),
                timeout=self.timeout,
                metadata=self._metadata,
            )
        except grpc.RpcError as e:
            code, details = _status(e)
            # A bad request is the caller's bug, not an outage: never let
            # fail_open hide it.
            if code in _CALLER_ERRORS:
                raise CoordinatorError(guard.circuit, code, details) from None
            if self.fail_open:
                log.warning("breakerd unavailable for %s (%s); allowing the call", guard.circuit, code.name)
                guard.unguarded = True
                return
            raise CoordinatorUnavailableError(guard.circuit, code, details) from None
        guard.state = _STATE_NAMES.get(resp.state, "unknown")
        if not resp.allowed:
            raise CircuitOpenError(
                guard.circuit,
                resp.retry_after_ms / 1000.0,
                state=guard.state,
                reason=_REJECT_NAMES.get(resp.reject_reason, "open"),
            )
        guard.generation = resp.generation
        guard.lease_id = resp.lease_id

    def _report(self, guard: Guard, outcome: int, latency_s: float) -> None:
        report = _pb.ReportRequest(
            node_id=self.node_id,
            outcomes=[
                _pb.OutcomeReport(
                    circuit=guard.circuit,
                    generation=guard.generation,
                    lease_id=guard.lease_id,
                    outcome=outcome,
                    latency_us=int(latency_s * 1_000_000),
                )
            ],
        )
        try:
            self._stub.Report(report, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            # The call itself already happened; a lost report must not turn
            # its result into an error. An unreported probe lease is taken
            # back by the coordinator after probe_lease_ms.
            code, details = _status(e)
            log.warning("breakerd report for %s lost: %s: %s", guard.circuit, code.name, details)


_CALLER_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def _status(e: grpc.RpcError) -> Tuple[grpc.StatusCode, str]:
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    return code, details or ""
