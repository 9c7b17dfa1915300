"""Cross-language end-to-end test: Python gRPC clients (stubs generated from
proto/ by grpcio-tools) against the real `breakerd` binary.

What the Rust tests cannot show: that the .proto is usable as the contract by
another language, that the binary starts, announces its address, reports
health, and exits cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breakerd.v1 import breakerd_pb2 as pb
from breakerd.v1 import breakerd_pb2_grpc as rpc
from breakerd_harness import Server

CLIENTS = 8
# Defaults from the design brief (the seed's "threshold 5, 60 s open").
TRIP_AFTER = 5
OPEN_BASE_MS = 60_000
OPEN_JITTER = 0.1
RPC_TIMEOUT_S = 5.0
EVENT_TIMEOUT_S = 10.0
# server.shutdown_drain_ms (5 s by default) bounds the drain; leave room.
SHUTDOWN_BOUND_S = 20.0


def fan_out(fn, n=CLIENTS):
    """Runs fn(i) on n threads at once; returns results in order of i."""
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n)))


def rpc_code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_concurrent_clients_trip_a_circuit_together(server):
    circuit = "py.cross-lang:payments/v1"
    channels = [grpc.insecure_channel(server.addr) for _ in range(CLIENTS)]
    stubs = [rpc.BreakerStub(ch) for ch in channels]
    admin = rpc.AdminStub(channels[0])
    barrier = threading.Barrier(CLIENTS, timeout=EVENT_TIMEOUT_S)

    # A watcher sees the trip pushed to it, as a Rust client would.
    events: queue.Queue = queue.Queue()
    watch = stubs[0].Watch(pb.WatchRequest(circuits=[circuit], node_id="py-watcher"))

    def pump():
        try:
            for ev in watch:
                events.put(ev)
        except grpc.RpcError as e:
            events.put(e)

    threading.Thread(target=pump, daemon=True).start()

    def node(i: int):
        stub, me = stubs[i], f"py-node-{i}"
        # Every node asks before the (pretend) call...
        first = stub.Acquire(pb.AcquireRequest(circuit=circuit, node_id=me), timeout=RPC_TIMEOUT_S)
        barrier.wait()
        # ...the dependency fails for all of them at once...
        report = stub.Report(
            pb.ReportRequest(
                node_id=me,
                outcomes=[
                    pb.OutcomeReport(
                        circuit=circuit,
                        generation=first.generation,
                        lease_id=first.lease_id,
                        outcome=pb.OUTCOME_FAILURE,
                        latency_us=1500,
                    )
                ],
            ),
            timeout=RPC_TIMEOUT_S,
        )
        barrier.wait()
        # ...and afterwards every node is turned away.
        after = stub.Acquire(pb.AcquireRequest(circuit=circuit, node_id=me), timeout=RPC_TIMEOUT_S)
        return first, report, after

    try:
        initial = events.get(timeout=EVENT_TIMEOUT_S)
        assert not isinstance(initial, Exception), initial
        assert initial.initial and [s.name for s in initial.circuits] == [circuit]
        assert initial.circuits[0].state == pb.CIRCUIT_STATE_CLOSED

        results = fan_out(node)
        firsts = [r[0] for r in results]
        reports = [r[1] for r in results]
        afters = [r[2] for r in results]

        gen0 = firsts[0].generation
        for first in firsts:
            assert first.allowed, first
            assert first.state == pb.CIRCUIT_STATE_CLOSED
            assert first.generation == gen0
            assert first.lease_id == 0
            assert first.reject_reason == pb.REJECT_REASON_NONE

        # Outcomes apply one at a time: exactly TRIP_AFTER failures count, the
        # trip bumps the generation, and the rest arrive stale.
        assert sum(r.applied for r in reports) == TRIP_AFTER
        assert sum(r.stale for r in reports) == CLIENTS - TRIP_AFTER
        assert sum(r.unknown for r in reports) == 0

        gen1 = afters[0].generation
        assert gen1 > gen0
        for after in afters:
            assert not after.allowed, after
            assert after.state == pb.CIRCUIT_STATE_OPEN
            assert after.reject_reason == pb.REJECT_REASON_OPEN
            assert after.generation == gen1
            assert 0 < after.retry_after_ms <= OPEN_BASE_MS * (1 + OPEN_JITTER)

        # The watcher was told, without asking.
        while True:
            ev = events.get(timeout=EVENT_TIMEOUT_S)
            assert not isinstance(ev, Exception), ev
            snap = next(s for s in ev.circuits if s.name == circuit)
            if snap.state == pb.CIRCUIT_STATE_OPEN:
                break
        assert snap.generation == gen1
        assert 0 < snap.open_remaining_ms <= OPEN_BASE_MS * (1 + OPEN_JITTER)
        assert snap.policy.consecutive_failures == TRIP_AFTER

        # The admin API shows the same circuit, its counters and its history.
        detail = admin.GetCircuit(pb.GetCircuitRequest(name=circuit), timeout=RPC_TIMEOUT_S)
        assert detail.snapshot.name == circuit
        assert detail.snapshot.state == pb.CIRCUIT_STATE_OPEN
        assert detail.snapshot.generation == gen1
        assert detail.snapshot.open_remaining_ms > 0
        assert not detail.snapshot.HasField("override")
        c = detail.counters
        assert (c.total_allowed, c.total_rejected) == (CLIENTS, CLIENTS)
        assert (c.total_failures, c.total_stale, c.total_successes) == (TRIP_AFTER, CLIENTS - TRIP_AFTER, 0)
        assert c.consecutive_trips == 1
        assert len(detail.history) >= 1
        trip = detail.history[0]
        assert getattr(trip, "from") == pb.CIRCUIT_STATE_CLOSED
        assert trip.to == pb.CIRCUIT_STATE_OPEN
        assert trip.generation == gen1
        assert trip.reason == "consecutive_failures"

        listed = admin.ListCircuits(
            pb.ListCircuitsRequest(prefix="py.cross-lang:", state=pb.CIRCUIT_STATE_OPEN), timeout=RPC_TIMEOUT_S
        )
        assert [s.name for s in listed.circuits] == [circuit]
        assert listed.total_matching == 1
    finally:
        watch.cancel()
        for ch in channels:
            ch.close()


BAD_NAMES = ["", "has space", "semi;colon", "caf\u00e9", "new\nline", "x" * 201]


def test_bad_names_are_invalid_argument_and_change_nothing(server):
    with grpc.insecure_channel(server.addr) as ch:
        stub, admin = rpc.BreakerStub(ch), rpc.AdminStub(ch)
        good = "py.names/" + "x" * (200 - len("py.names/"))  # exactly 200 bytes: allowed
        ok = stub.Acquire(pb.AcquireRequest(circuit=good, node_id="py"), timeout=RPC_TIMEOUT_S)
        assert ok.allowed
        before = admin.GetCircuit(pb.GetCircuitRequest(name=good), timeout=RPC_TIMEOUT_S)

        for name in BAD_NAMES:
            code = rpc_code(lambda: stub.Acquire(pb.AcquireRequest(circuit=name, node_id="py"), timeout=RPC_TIMEOUT_S))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code)
            code = rpc_code(lambda: admin.GetCircuit(pb.GetCircuitRequest(name=name), timeout=RPC_TIMEOUT_S))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code)

        # A batch with one bad name is refused whole: the good outcome before
        # it is not applied either.
        batch = pb.ReportRequest(
            node_id="py",
            outcomes=[
                pb.OutcomeReport(circuit=good, generation=ok.generation, outcome=pb.OUTCOME_FAILURE),
                pb.OutcomeReport(circuit="bad name", generation=ok.generation, outcome=pb.OUTCOME_FAILURE),
            ],
        )
        assert rpc_code(lambda: stub.Report(batch, timeout=RPC_TIMEOUT_S)) == grpc.StatusCode.INVALID_ARGUMENT
        after = admin.GetCircuit(pb.GetCircuitRequest(name=good), timeout=RPC_TIMEOUT_S)
        assert after.counters == before.counters
        assert after.snapshot.generation == before.snapshot.generation

        # A bad node id is refused too; an unknown circuit is NOT_FOUND.
        code = rpc_code(lambda: stub.Acquire(pb.AcquireRequest(circuit=good, node_id="bad node"), timeout=RPC_TIMEOUT_S))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        code = rpc_code(lambda: admin.GetCircuit(pb.GetCircuitRequest(name="py.never-seen"), timeout=RPC_TIMEOUT_S))
        assert code == grpc.StatusCode.NOT_FOUND


def test_health_serving_then_not_serving_and_clean_exit_on_sigterm(server):
    with grpc.insecure_channel(server.addr) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "breakerd.v1.Breaker", "breakerd.v1.Admin"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service

        # A fleet keeps Watch streams open all the time; they must not hold
        # the shutdown open, and health watchers must hear NOT_SERVING.
        watch = rpc.BreakerStub(ch).Watch(
            pb.WatchRequest(circuits=["py.shutdown"], node_id="py"), timeout=SHUTDOWN_BOUND_S
        )
        assert next(watch).initial
        statuses: queue.Queue = queue.Queue()
        hwatch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=SHUTDOWN_BOUND_S)

        def pump():
            try:
                for update in hwatch:
                    statuses.put(update.status)
            except grpc.RpcError as e:
                statuses.put(e.code())

        threading.Thread(target=pump, daemon=True).start()
        assert statuses.get(timeout=EVENT_TIMEOUT_S) == health_pb2.HealthCheckResponse.SERVING

        server.send_sigterm()
        assert statuses.get(timeout=EVENT_TIMEOUT_S) == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as ended:
            next(watch)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
        code = server.wait_exit(timeout=SHUTDOWN_BOUND_S)
        assert code == 0, "\n".join(server.output()[-20:])
        hwatch.cancel()

    # Structured logs from the first line to the last.
    lines = server.output()
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def trip(stub, circuit: str) -> pb.AcquireResponse:
    """TRIP_AFTER failed calls in a row; returns the rejection that follows."""
    for i in range(TRIP_AFTER):
        d = stub.Acquire(pb.AcquireRequest(circuit=circuit, node_id=f"py-{i}"), timeout=RPC_TIMEOUT_S)
        assert d.allowed, d
        stub.Report(
            pb.ReportRequest(
                node_id=f"py-{i}",
                outcomes=[pb.OutcomeReport(circuit=circuit, generation=d.generation, outcome=pb.OUTCOME_FAILURE)],
            ),
            timeout=RPC_TIMEOUT_S,
        )
    rejected = stub.Acquire(pb.AcquireRequest(circuit=circuit, node_id="py"), timeout=RPC_TIMEOUT_S)
    assert not rejected.allowed and rejected.state == pb.CIRCUIT_STATE_OPEN, rejected
    return rejected


def test_open_circuits_overrides_and_audit_survive_kill_9(tmp_path):
    """A restart must never slam a dependency the fleet had stopped calling."""
    store = tmp_path / "store"
    opened, forced = "py.durable:open", "py.durable:forced"
    with Server(store=store, log_path=tmp_path / "first.log") as first:
        with grpc.insecure_channel(first.addr) as ch:
            stub, admin = rpc.BreakerStub(ch), rpc.AdminStub(ch)
            forced_gen = admin.SetOverride(
                pb.SetOverrideRequest(
                    name=forced, kind=pb.OVERRIDE_KIND_FORCED_OPEN, actor="py-test", reason="maintenance window"
                ),
                timeout=RPC_TIMEOUT_S,
            ).snapshot.generation
            # The trip comes last, so nothing after it can flush it to disk by
            # chance before the crash.
            before = trip(stub, opened)
        # No goodbye: the process dies as in a crash.
        first.kill()
        assert first.proc.returncode == -9

    with Server(store=store, log_path=tmp_path / "second.log") as second:
        with grpc.insecure_channel(second.addr) as ch:
            stub, admin = rpc.BreakerStub(ch), rpc.AdminStub(ch)
            after = stub.Acquire(pb.AcquireRequest(circuit=opened, node_id="py"), timeout=RPC_TIMEOUT_S)
            assert not after.allowed, after
            assert after.state == pb.CIRCUIT_STATE_OPEN
            assert after.generation >= before.generation
            # The open time kept running across the restart; it did not start again.
            assert 0 < after.retry_after_ms <= before.retry_after_ms

            d = admin.GetCircuit(pb.GetCircuitRequest(name=forced), timeout=RPC_TIMEOUT_S)
            assert d.snapshot.HasField("override")
            ov = d.snapshot.override
            assert (ov.kind, ov.actor, ov.reason) == (pb.OVERRIDE_KIND_FORCED_OPEN, "py-test", "maintenance window")
            assert d.snapshot.generation >= forced_gen
            rejected = stub.Acquire(pb.AcquireRequest(circuit=forced, node_id="py"), timeout=RPC_TIMEOUT_S)
            assert not rejected.allowed and rejected.reject_reason == pb.REJECT_REASON_FORCED_OPEN

            # So does the audit trail of who forced it, and why.
            audit = admin.ListAuditEvents(pb.ListAuditEventsRequest(circuit=forced), timeout=RPC_TIMEOUT_S)
            assert [(e.action, e.actor, e.reason) for e in audit.events] == [
                ("set_override", "py-test", "maintenance window")
            ]
        assert second.terminate() == 0
