"""A tiny breakerd client for the README walkthrough (run it via scripts/demo).

Uses the Python stubs generated from proto/ by tests/python/setup-venv.sh.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python" / "gen"))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from breakerd.v1 import breakerd_pb2 as pb  # noqa: E402
from breakerd.v1 import breakerd_pb2_grpc as rpc  # noqa: E402

TIMEOUT_S = 5.0


def state(value: int) -> str:
    return pb.CircuitState.Name(value).removeprefix("CIRCUIT_STATE_")


def show_decision(node: str, d: pb.AcquireResponse) -> None:
    if d.allowed:
        print(f"{node}: allowed   state={state(d.state)} generation={d.generation}")
    else:
        reason = pb.RejectReason.Name(d.reject_reason).removeprefix("REJECT_REASON_")
        print(
            f"{node}: REJECTED  state={state(d.state)} generation={d.generation} "
            f"reason={reason} retry_after_ms={d.retry_after_ms}"
        )


def trip(ch: grpc.Channel, circuit: str, nodes: int) -> None:
    """Each web node asks, calls a dependency that fails, and reports it."""
    stub = rpc.BreakerStub(ch)
    for i in range(1, nodes + 1):
        node = f"web-{i}"
        d = stub.Acquire(pb.AcquireRequest(circuit=circuit, node_id=node), timeout=TIMEOUT_S)
        show_decision(node, d)
        if not d.allowed:
            continue
        r = stub.Report(
            pb.ReportRequest(
                node_id=node,
                outcomes=[
                    pb.OutcomeReport(
                        circuit=circuit,
                        generation=d.generation,
                        lease_id=d.lease_id,
                        outcome=pb.OUTCOME_FAILURE,
                        latency_us=250_000,
                    )
                ],
            ),
            timeout=TIMEOUT_S,
        )
        print(f"{node}: reported FAILURE (applied={r.applied} stale={r.stale})")
    node = f"web-{nodes + 1}"
    show_decision(node, stub.Acquire(pb.AcquireRequest(circuit=circuit, node_id=node), timeout=TIMEOUT_S))


def show(ch: grpc.Channel, circuit: str) -> None:
    detail = rpc.AdminStub(ch).GetCircuit(pb.GetCircuitRequest(name=circuit), timeout=TIMEOUT_S)
    print(json_format.MessageToJson(detail, preserving_proto_field_name=True))


def reset(ch: grpc.Channel, circuit: str) -> None:
    detail = rpc.AdminStub(ch).ResetCircuit(
        pb.ResetCircuitRequest(name=circuit, actor=os.environ.get("USER", "demo"), reason="scripts/demo reset"),
        timeout=TIMEOUT_S,
    )
    print(f"{circuit}: {state(detail.snapshot.state)} generation={detail.snapshot.generation}")


def main() -> int:
    p = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    p.add_argument("command", choices=["trip", "show", "reset"])
    p.add_argument("circuit", nargs="?", default="payments")
    p.add_argument("--nodes", type=int, default=5, help="web nodes that fail once each (trip)")
    p.add_argument("--addr", default="127.0.0.1:50051", help="where breakerd listens")
    args = p.parse_args()
    with grpc.insecure_channel(args.addr) as ch:
        try:
            if args.command == "trip":
                trip(ch, args.circuit, args.nodes)
            elif args.command == "show":
                show(ch, args.circuit)
            else:
                reset(ch, args.circuit)
        except grpc.RpcError as e:
            print(f"breakerd at {args.addr}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
