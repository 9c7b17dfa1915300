"""pytest fixtures shared by the Python tests: a real breakerd per test."""

from __future__ import annotations

import pytest

from breakerd_harness import Server


@pytest.fixture
def server(tmp_path):
    """A freshly started coordinator on an ephemeral loopback port, health
    SERVING; killed after the test whatever happened."""
    with Server(log_path=tmp_path / "breakerd.log") as s:
        yield s
