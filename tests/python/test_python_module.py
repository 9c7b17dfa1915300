"""The Python client module (clients/python/breakerd_client) against the real
`breakerd` binary: guard, decorator, probe leases, errors.

Uses the `server` fixture of conftest.py and the stubs that setup-venv.sh
generates into tests/python/gen (breakerd_harness puts them on sys.path).
State is read back through the Admin API; nothing sleeps.
"""

from __future__ import annotations

import sys
import threading

import grpc
import pytest

from breakerd_harness import ROOT

sys.path.insert(0, str(ROOT / "clients" / "python"))

from breakerd.v1 import breakerd_pb2 as pb  # noqa: E402
from breakerd.v1 import breakerd_pb2_grpc as rpc  # noqa: E402
from breakerd_client import (  # noqa: E402
    Breaker,
    CircuitOpenError,
    CoordinatorError,
    CoordinatorUnavailableError,
)

# Generous per-call deadline for a loaded CI machine; the module's default
# (50 ms) is what production callers get.
TIMEOUT_S = 5.0


class Boom(Exception):
    pass


class FakeClock:
    """A monotonic clock the test moves by hand, to check reported latency."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.addr) as ch:
        yield ch


@pytest.fixture
def admin(channel):
    return rpc.AdminStub(channel)


def detail(admin, name):
    return admin.GetCircuit(pb.GetCircuitRequest(name=name), timeout=TIMEOUT_S)


def set_policy(admin, name, **fields):
    admin.SetPolicy(
        pb.SetPolicyRequest(name=name, policy=pb.Policy(**fields), actor="pytest", reason="test setup"),
        timeout=TIMEOUT_S,
    )


def test_guard_reports_success_and_failure(channel, admin):
    breaker = Breaker(channel, node_id="py-module-1", timeout=TIMEOUT_S)
    name = "py.module:guard"

    with breaker.guard(name) as g:
        assert g.state == "closed"
        assert g.generation > 0 and g.lease_id == 0
        result = "charged"
    assert result == "charged"
    c = detail(admin, name).counters
    assert (c.total_allowed, c.total_successes, c.total_failures) == (1, 1, 0)

    # An exception is reported as FAILURE and still reaches the caller.
    with pytest.raises(Boom):
        with breaker.guard(name):
            raise Boom("downstream 500")
    c = detail(admin, name).counters
    assert (c.total_allowed, c.total_successes, c.total_failures) == (2, 1, 1)
    assert c.consecutive_failures == 1

    # Explicit outcomes win over the exit path.
    with breaker.guard(name) as g:
        g.failure()  # e.g. a 503 returned without an exception
    with breaker.guard(name) as g:
        g.ignore()
    with pytest.raises(KeyError):
        with breaker.guard(name, failure_on=(Boom,)):
            raise KeyError("client-side bug: says nothing about the dependency")
    c = detail(admin, name).counters
    assert (c.total_failures, c.total_ignored) == (2, 2)


def test_failures_trip_the_circuit_and_guard_raises_circuit_open(channel, admin):
    name = "py.module:trip"
    set_policy(admin, name, consecutive_failures=2, open_base_ms=60_000, open_jitter=0.0)
    breaker = Breaker(channel, node_id="py-module-2", timeout=TIMEOUT_S)

    for _ in range(2):
        with pytest.raises(Boom):
            with breaker.guard(name):
                raise Boom()
    assert detail(admin, name).snapshot.state == pb.CIRCUIT_STATE_OPEN

    ran = []
    with pytest.raises(CircuitOpenError) as info:
        with breaker.guard(name):
            ran.append(True)
    assert ran == [], "the dependency must not be called while OPEN"
    err = info.value
    assert err.circuit == name
    assert err.state == "open" and err.reason == "open"
    assert 0 < err.retry_after <= 60.0
    assert detail(admin, name).counters.total_rejected == 1


def test_decorator_and_call(channel, admin):
    breaker = Breaker(channel, node_id="py-module-3", timeout=TIMEOUT_S)
    name = "py.module:decorated"

    @breaker.protect(name)
    def fetch(user, *, fail=False):
        """Fetches things."""
        if fail:
            raise Boom(user)
        return f"recs for {user}"

    assert fetch.__name__ == "fetch" and fetch.__doc__ == "Fetches things."
    assert fetch("ann") == "recs for ann"
    with pytest.raises(Boom):
        fetch("bob", fail=True)
    assert breaker.call(name, lambda x: x * 2, 21) == 42
    c = detail(admin, name).counters
    assert (c.total_allowed, c.total_successes, c.total_failures) == (3, 2, 1)


def test_latency_is_reported(channel, admin):
    name = "py.module:slow"
    # The window only counts while a rate rule is on; minimum_calls keeps
    # this one from ever tripping here.
    set_policy(admin, name, slow_call_duration_ms=1000, slow_call_rate_threshold=1.0, minimum_calls=100)
    clock = FakeClock()
    breaker = Breaker(channel, node_id="py-module-4", timeout=TIMEOUT_S, clock=clock)

    with breaker.guard(name):
        clock.now += 2.5  # the call "took" 2.5 s
    with breaker.guard(name):
        clock.now += 0.01
    c = detail(admin, name).counters
    assert (c.window_calls, c.window_slow_calls) == (2, 1)


def test_half_open_probe_lease_is_reported_back(channel, admin):
    name = "py.module:probe"
    set_policy(admin, name, half_open_max_probes=1, successes_to_close=1)
    # Clearing a forced-open override leaves the circuit HALF_OPEN, so the
    # fleet probes before it resumes.
    admin.SetOverride(
        pb.SetOverrideRequest(name=name, kind=pb.OVERRIDE_KIND_FORCED_OPEN, actor="pytest", reason="test"),
        timeout=TIMEOUT_S,
    )
    with pytest.raises(CircuitOpenError) as info:
        with Breaker(channel, node_id="py-module-5", timeout=TIMEOUT_S).guard(name):
            pass
    assert info.value.reason == "forced_open"
    admin.ClearOverride(pb.ClearOverrideRequest(name=name, actor="pytest", reason="test"), timeout=TIMEOUT_S)
    assert detail(admin, name).snapshot.state == pb.CIRCUIT_STATE_HALF_OPEN

    a = Breaker(channel, node_id="py-module-5a", timeout=TIMEOUT_S)
    b = Breaker(channel, node_id="py-module-5b", timeout=TIMEOUT_S)
    with a.guard(name) as probe:
        assert probe.state == "half_open" and probe.lease_id != 0
        # The one probe is out: everyone else is turned away meanwhile.
        with pytest.raises(CircuitOpenError) as info:
            with b.guard(name):
                pass
        assert (info.value.state, info.value.reason) == ("half_open", "probes_exhausted")
        assert detail(admin, name).counters.probes_in_flight == 1
    # Its success, reported with the lease, closes the circuit.
    d = detail(admin, name)
    assert d.snapshot.state == pb.CIRCUIT_STATE_CLOSED
    assert d.counters.probes_in_flight == 0


def test_concurrent_guards_from_threads(server, admin):
    name = "py.module:threads"
    errors: list[BaseException] = []
    with Breaker(server.addr, node_id="py-module-6", timeout=TIMEOUT_S) as breaker:

        def work():
            try:
                for _ in range(10):
                    with breaker.guard(name):
                        pass
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert detail(admin, name).counters.total_successes == 40


def test_bad_names_raise_coordinator_error_even_when_failing_open(channel):
    breaker = Breaker(channel, node_id="py-module-7", timeout=TIMEOUT_S, fail_open=True)
    with pytest.raises(CoordinatorError) as info:
        with breaker.guard("not a valid name"):
            pass
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert not isinstance(info.value, CoordinatorUnavailableError)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_coordinator_down_raises_or_fails_open():
    target = f"127.0.0.1:{free_port()}"
    ran = []
    with Breaker(target, node_id="py-module-8", timeout=0.2) as breaker:
        with pytest.raises(CoordinatorUnavailableError) as info:
            with breaker.guard("py.module:down"):
                ran.append(True)
        assert ran == []
        assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

    with Breaker(target, node_id="py-module-8", timeout=0.2, fail_open=True) as breaker:
        with breaker.guard("py.module:down") as g:
            ran.append(True)
        assert g.unguarded
        # A failing call still raises its own exception; no report is tried.
        with pytest.raises(Boom):
            with breaker.guard("py.module:down"):
                raise Boom()
    assert ran == [True]
