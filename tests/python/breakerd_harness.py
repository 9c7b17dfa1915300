"""Start and stop a real `breakerd` binary for tests and demos.

The coordinator is started on `127.0.0.1:0`; the port it actually bound is
read from its JSON start-up log line (`"listen_addr": "127.0.0.1:NNNNN"`).
Readiness is `grpc.health.v1` reporting SERVING, waited for with a deadline:
nothing here sleeps to wait for a state change.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GEN = Path(__file__).resolve().parent / "gen"
if str(GEN) not in sys.path:
    sys.path.insert(0, str(GEN))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from breakerd.v1 import breakerd_pb2, breakerd_pb2_grpc  # noqa: E402,F401

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 20.0

_ADDR = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:]+\]):(\d{1,5})$")


def breakerd_bin() -> Path:
    """The binary under test: $BREAKERD_BIN, else target/debug/breakerd."""
    path = Path(os.environ.get("BREAKERD_BIN") or ROOT / "target" / "debug" / "breakerd")
    if not path.is_absolute():
        path = ROOT / path
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            f"breakerd binary {path} is missing or not executable; "
            "build it with `cargo build -p breakerd` or set BREAKERD_BIN"
        )
    return path


def clean_env() -> dict[str, str]:
    """The caller's environment without BREAKERD_* settings, so a developer's
    shell cannot change what the tests start."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BREAKERD_")}


def find_listen_addr(line: str) -> str | None:
    """The bound address announced by a JSON log line, if this is that line.

    Only a `listen_addr` field with a non-zero port counts: the configured
    `127.0.0.1:0` is not an address anyone can connect to.
    """
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    fields = event.get("fields") if isinstance(event.get("fields"), dict) else {}
    for value in (event.get("listen_addr"), fields.get("listen_addr")):
        if isinstance(value, str):
            m = _ADDR.match(value)
            if m and int(m.group(1)) != 0:
                return value
    return None


def bearer(token: str) -> list[tuple[str, str]]:
    """gRPC metadata carrying `token` the way breakerd expects it."""
    return [("authorization", f"Bearer {token}")]


class Server:
    """A running `breakerd` process and everything it printed."""

    def __init__(
        self,
        store: Path | None,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        root_certificates: bytes | None = None,
    ):
        """`store`: the store directory (`None`: in memory only). The HTTP side
        port is off: these tests speak gRPC, and a fixed default port would
        collide between servers running at once.

        `env`: variables added to the clean environment (e.g.
        BREAKERD_ADMIN_TOKEN: secrets go there, not on the command line).
        `root_certificates`: PEM CA of a server started with `[tls]`; its
        channels (readiness included) are then TLS."""
        self.args = [
            str(breakerd_bin()),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--store",
            str(store) if store is not None else "none",
            *(extra_args or []),
        ]
        self.log_path = log_path
        self.env = env or {}
        self.root_certificates = root_certificates
        self.lines: list[str] = []
        self.addr: str | None = None
        # Set when the address line arrives or when the output closes.
        self._announced = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()

    def start(self) -> str:
        """Starts the process and returns its address once health is SERVING."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**clean_env(), **self.env},
            cwd=ROOT,
        )
        threading.Thread(target=self._drain, name="breakerd-log", daemon=True).start()
        if not self._announced.wait(timeout=STARTUP_TIMEOUT_S):
            raise RuntimeError(self._explain("no listen_addr log line within the start-up deadline"))
        if self.addr is None:
            raise RuntimeError(self._explain("breakerd closed its output during start-up"))
        self.wait_serving(deadline)
        return self.addr

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None
        try:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                with self._lock:
                    self.lines.append(line)
                if log:
                    log.write(line + "\n")
                    log.flush()
                if self.addr is None:
                    self.addr = find_listen_addr(line)
                    if self.addr:
                        self._announced.set()
        finally:
            if log:
                log.close()
            self._closed.set()
            self._announced.set()

    def output(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def _explain(self, what: str) -> str:
        code = self.proc.poll() if self.proc else None
        tail = "\n".join(self.output()[-40:])
        return f"{what} (exit code {code}); command: {' '.join(self.args)}\n--- breakerd output ---\n{tail}"

    def wait_serving(self, deadline: float) -> None:
        """Waits until grpc.health.v1 says SERVING for the whole server."""
        with self.channel() as channel:
            ready = grpc.channel_ready_future(channel)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(self._explain(f"{self.addr} did not accept connections in time"))
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(self._explain("breakerd exited before it was ready"))
                try:
                    ready.result(timeout=min(left, 0.5))
                    break
                except grpc.FutureTimeoutError:
                    continue
            health = health_pb2_grpc.HealthStub(channel)
            left = max(deadline - time.monotonic(), 0.1)
            stream = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=left)
            try:
                for update in stream:
                    if update.status == health_pb2.HealthCheckResponse.SERVING:
                        return
            except grpc.RpcError as e:
                raise RuntimeError(self._explain(f"health never became SERVING: {e.code()} {e.details()}")) from e
            finally:
                stream.cancel()
            raise RuntimeError(self._explain("health stream ended before SERVING"))

    def channel(self) -> grpc.Channel:
        """A new channel to the server: TLS when it was started with
        `root_certificates` (the certificate must name 127.0.0.1), else
        plaintext."""
        assert self.addr is not None
        if self.root_certificates is None:
            return grpc.insecure_channel(self.addr)
        creds = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
        return grpc.secure_channel(self.addr, creds)

    def terminate(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> int:
        """SIGTERM, then the exit code once the process has drained and exited."""
        self.send_sigterm()
        return self.wait_exit(timeout)

    def send_sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> int:
        """The exit code, once the process has exited and its output is read."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(self._explain(f"breakerd did not exit within {timeout}s"))
        self._closed.wait(timeout=5)
        return code

    def kill(self) -> None:
        """Makes sure the process is gone (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
