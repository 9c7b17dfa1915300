"""pytest fixtures shared by the Python tests: a real breakerd per test."""

from __future__ import annotations

import pytest

from breakerd_harness import Server


@pytest.fixture
def server(tmp_path):
    """A freshly started coordinator on an ephemeral loopback port with an
    empty store of its own, health SERVING; killed after the test whatever
    happened."""
    with Server(store=tmp_path / "store", log_path=tmp_path / "breakerd.log") as s:
        yield s
