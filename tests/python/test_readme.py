"""The README's configuration reference stays in step with the binary and
the annotated example config: every flag, every BREAKERD_* variable and
every TOML key that exists is documented, and nothing documented is gone."""

from __future__ import annotations

import re
import subprocess
import tomllib

from breakerd_harness import ROOT, breakerd_bin, clean_env

README = (ROOT / "README.md").read_text()
CLAP_BUILTINS = {"--help", "--version"}
# Variables of the test scripts, not of the server.
SCRIPT_VARS = {"BREAKERD_BIN"}


def help_text() -> str:
    return subprocess.run(
        [str(breakerd_bin()), "--help"], capture_output=True, text=True, timeout=30, env=clean_env(), check=True
    ).stdout


def server_env_vars() -> set[str]:
    names = set(re.findall(r"BREAKERD_[A-Z0-9_]+", help_text()))
    for src in (ROOT / "server" / "src").rglob("*.rs"):
        names.update(re.findall(r'"(BREAKERD_[A-Z0-9_]+)"', src.read_text()))
    return names


def test_every_flag_is_documented_and_every_documented_flag_exists():
    flags = set(re.findall(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", help_text(), re.M)) - CLAP_BUILTINS
    assert flags
    missing = sorted(f for f in flags if f"`{f}" not in README)
    assert not missing, f"README does not document {missing}"
    # Only the reference section: other sections show other tools' flags
    # (the chaos suite's `--quick`, the benchmarks').
    start = README.index("## Configuration reference")
    end = README.find("\n## ", start + 1)
    reference = README[start : end if end != -1 else None]
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)", reference))
    stale = sorted(documented - flags - CLAP_BUILTINS)
    assert not stale, f"README documents flags breakerd no longer has: {stale}"


def test_every_variable_is_documented_and_exists():
    known = server_env_vars()
    missing = sorted(v for v in known if f"`{v}`" not in README)
    assert not missing, f"README does not document {missing}"
    stale = sorted(set(re.findall(r"BREAKERD_[A-Z0-9_]+", README)) - known - SCRIPT_VARS)
    assert not stale, f"README names variables breakerd does not read: {stale}"


def test_every_toml_key_of_the_example_config_is_documented():
    config = tomllib.loads((ROOT / "deploy" / "breakerd.toml").read_text())
    missing = []
    for section, value in config.items():
        tables = value if isinstance(value, list) else [value]
        header = f"`[[{section}]]`" if isinstance(value, list) else f"`[{section}]`"
        if header not in README:
            missing.append(header)
        for table in tables:
            missing.extend(f"{section}.{key}" for key in table if f"`{key}`" not in README)
    assert not missing, f"README does not document {sorted(set(missing))}"
