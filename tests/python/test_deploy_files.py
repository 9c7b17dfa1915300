"""Static checks of deploy/: the files parse, and every breakerd flag and
BREAKERD_* variable they use is one the real binary knows (`--help`, or for
environment-only secrets the server's source), so a renamed option cannot
leave the deployment files silently behind.

Docker cannot build here, so the Dockerfile is read, not built.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from breakerd_harness import ROOT, breakerd_bin, clean_env

DEPLOY = ROOT / "deploy"
K8S_FILES = sorted((DEPLOY / "k8s").glob("*.yaml"))
DEPLOY_TEXT_FILES = [
    DEPLOY / "Dockerfile",
    DEPLOY / "compose.yaml",
    DEPLOY / "systemd" / "breakerd.service",
    *K8S_FILES,
]
GRPC_PORT = 50051


@pytest.fixture(scope="module")
def help_text() -> str:
    out = subprocess.run(
        [str(breakerd_bin()), "--help"], capture_output=True, text=True, timeout=30, env=clean_env(), check=True
    )
    return out.stdout


def flags_of(args: list[str]) -> list[str]:
    """`--name` of every option in an argument list (`--a=b` gives `--a`)."""
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def k8s_docs() -> list[dict]:
    docs = []
    for path in K8S_FILES:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def dockerfile_exec_form(instruction: str) -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text()
    found = re.findall(rf"^{instruction}\s+(\[.*\])\s*$", text, re.M)
    assert found, f"Dockerfile has no exec-form {instruction}"
    return yaml.safe_load(found[-1])  # a JSON array is YAML too


def systemd_values(key: str) -> list[str]:
    text = (DEPLOY / "systemd" / "breakerd.service").read_text()
    return re.findall(rf"^{key}=(.*)$", text, re.M)


def breakerd_invocations() -> dict[str, list[str]]:
    """Every breakerd argument list in deploy/, by where it comes from."""
    found = {"Dockerfile ENTRYPOINT": dockerfile_exec_form("ENTRYPOINT")[1:]}
    for cmd in systemd_values("ExecStart"):
        argv = shlex.split(cmd)
        assert argv[0].endswith("/breakerd"), cmd
        found["systemd ExecStart"] = argv[1:]
    svc = compose()["services"]["breakerd"]
    command = svc.get("command", [])
    found["compose command"] = shlex.split(command) if isinstance(command, str) else list(command)
    for doc in k8s_docs():
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            found[f"k8s {doc['kind']} container {c['name']}"] = [*c.get("command", [])[1:], *c.get("args", [])]
    return found


def web_node_flags() -> set[str]:
    """The long flags of examples/web-node: its clap fields, kebab-cased."""
    text = (ROOT / "examples" / "web-node" / "src" / "main.rs").read_text()
    fields = re.findall(r"#\[arg\(\s*long[^\]]*\]\s*(\w+):", text)
    assert fields, "no clap fields found in examples/web-node/src/main.rs"
    return {"--" + f.replace("_", "-") for f in fields}


def test_compose_runs_three_web_nodes_with_existing_flags():
    services = compose()["services"]
    nodes = {name: svc for name, svc in services.items() if svc.get("entrypoint") == ["/usr/local/bin/web-node"]}
    assert len(nodes) == 3, sorted(services)
    known = web_node_flags()
    for name, svc in nodes.items():
        assert svc["environment"]["NODE_ID"] == name
        assert "breakerd" in svc["depends_on"]
        unknown = [f for f in flags_of(svc["command"]) if f not in known]
        assert not unknown, f"{name}: flags not in web-node's Args: {unknown}"
        assert "http://breakerd:50051" in svc["command"]


def test_yaml_files_parse_and_k8s_objects_are_complete():
    assert compose()["services"]["breakerd"]
    kinds = {}
    for doc in k8s_docs():
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc
        kinds.setdefault(doc["kind"], []).append(doc)
    assert "StatefulSet" in kinds and "Service" in kinds, sorted(kinds)


def test_k8s_probes_resources_and_volume():
    (sts,) = [d for d in k8s_docs() if d["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == GRPC_PORT, probe
    named_ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert named_ports.get("grpc") == GRPC_PORT
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts.get("data") == "/var/lib/breakerd" and "data" in claims
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert sts["spec"]["selector"]["matchLabels"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    services = [d for d in k8s_docs() if d["kind"] == "Service"]
    assert sts["spec"]["serviceName"] in {s["metadata"]["name"] for s in services}
    for svc in services:
        assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
        assert GRPC_PORT in [p["port"] for p in svc["spec"]["ports"]]
        for p in svc["spec"]["ports"]:
            assert named_ports.get(p["targetPort"]) == p["port"], p


def test_dockerfile_runs_unprivileged_on_the_grpc_port():
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2 and "rust" in stages[0] and "debian" in stages[-1] and "slim" in stages[-1], stages
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0"), user
    assert re.search(rf"^EXPOSE\s+{GRPC_PORT}\b", text, re.M)
    assert dockerfile_exec_form("ENTRYPOINT")[0] == "/usr/local/bin/breakerd"
    # Everything the image copies from the build context must exist.
    for src in re.findall(r"^COPY\s+(?!--from)(\S+)\s", text, re.M):
        if src != ".":
            assert (ROOT / src).exists(), src


def test_systemd_unit_is_hardened():
    for key in ("NoNewPrivileges", "ProtectSystem", "DynamicUser", "StateDirectory", "PrivateTmp"):
        assert systemd_values(key), key
    if shutil.which("systemd-analyze"):
        out = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(DEPLOY / "systemd" / "breakerd.service")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # The binary is not installed at /usr/local/bin here; anything else
        # systemd complains about is a real mistake in the unit.
        problems = [
            line
            for line in (out.stdout + out.stderr).splitlines()
            if line.strip() and "is not executable" not in line and "/usr/local/bin/breakerd" not in line
        ]
        assert not problems, problems


def test_every_flag_and_variable_used_in_deploy_exists(help_text):
    known_flags = set(re.findall(r"--[a-z][a-z0-9-]*", help_text))
    used_flags = {(where, f) for where, args in breakerd_invocations().items() for f in flags_of(args)}
    assert used_flags, "no breakerd flags found in deploy/: is the parser looking in the right places?"
    unknown = sorted((where, f) for where, f in used_flags if f not in known_flags)
    assert not unknown, f"flags not in `breakerd --help`: {unknown}"

    # Secrets are read from the environment only, so they are not flags and
    # `--help` does not list them; the server's source names them.
    known_vars = set(re.findall(r"BREAKERD_[A-Z0-9_]+", help_text))
    for src in (ROOT / "server" / "src").rglob("*.rs"):
        known_vars.update(re.findall(r'"(BREAKERD_[A-Z0-9_]+)"', src.read_text()))
    used_vars = {(p.relative_to(ROOT).as_posix(), v) for p in DEPLOY_TEXT_FILES for v in re.findall(r"BREAKERD_[A-Z0-9_]+", p.read_text())}
    assert used_vars
    unknown = sorted((where, v) for where, v in used_vars if v not in known_vars)
    assert not unknown, f"variables not in `breakerd --help`: {unknown}"


def test_the_config_the_images_ship_is_accepted(help_text):
    if "--check-config" not in help_text:
        pytest.fail("breakerd --help no longer lists --check-config")
    out = subprocess.run(
        [str(breakerd_bin()), "--config", str(DEPLOY / "breakerd.toml"), "--check-config"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
    )
    assert out.returncode == 0, out.stdout + out.stderr
