"""breakerd_client: guard calls to a dependency with a breakerd circuit.

A small, synchronous wrapper over the generated ``breakerd.v1`` gRPC stubs
for Python services::

    from breakerd_client import Breaker, CircuitOpenError

    breaker = Breaker("127.0.0.1:50051", node_id="web-1")

    try:
        with breaker.guard("payments"):
            charge(card)              # SUCCESS on normal exit, FAILURE on exception
    except CircuitOpenError as e:
        serve_fallback(retry_after=e.retry_after)

    @breaker.protect("recs:v2")
    def recommendations(user): ...

The stubs are generated from ``proto/breakerd/v1/breakerd.proto`` and must
be importable as ``breakerd.v1.breakerd_pb2`` (see clients/python/README.md);
they are never committed, so they cannot drift from the proto.
"""

from ._breaker import (
    Breaker,
    BreakerError,
    CircuitOpenError,
    CoordinatorError,
    CoordinatorUnavailableError,
    Guard,
)

__all__ = [
    "Breaker",
    "BreakerError",
    "CircuitOpenError",
    "CoordinatorError",
    "CoordinatorUnavailableError",
    "Guard",
]
