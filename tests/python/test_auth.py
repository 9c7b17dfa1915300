"""Authentication against the real binary: TLS on the gRPC port and bearer
tokens, from a Python gRPC client.

The CA and the server certificate are made here at test time with the
`cryptography` package (no private key is committed). The tokens reach
breakerd through BREAKERD_DATA_TOKEN / BREAKERD_ADMIN_TOKEN, as they
should in production: never on the command line.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breakerd.v1 import breakerd_pb2 as pb
from breakerd.v1 import breakerd_pb2_grpc as pb_grpc
from breakerd_harness import Server, bearer

DATA = "py-data-token-0123456789"
ADMIN = "py-admin-token-0123456789"
WRONG = "py-wrong-token-0123456789"
RPC_TIMEOUT_S = 10


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_certificates(dir: Path) -> tuple[bytes, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it.
    Returns the CA PEM and the paths of the server certificate and key."""
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("breakerd python test CA"))
        .issuer_name(_name("breakerd python test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    cert_path, key_path = dir / "server.pem", dir / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path


@pytest.fixture
def tls_server(tmp_path):
    """breakerd serving TLS with a data-plane and an admin token."""
    ca_pem, cert_path, key_path = make_certificates(tmp_path)
    config = tmp_path / "breakerd.toml"
    config.write_text(f'[tls]\ncert_path = "{cert_path}"\nkey_path = "{key_path}"\n')
    server = Server(
        store=None,
        extra_args=["--config", str(config)],
        log_path=tmp_path / "breakerd.log",
        env={"BREAKERD_DATA_TOKEN": DATA, "BREAKERD_ADMIN_TOKEN": ADMIN},
        root_certificates=ca_pem,
    )
    with server:
        yield server


def force_open(admin: pb_grpc.AdminStub, token: str | None) -> None:
    admin.SetOverride(
        pb.SetOverrideRequest(
            name="payments",
            kind=pb.OVERRIDE_KIND_FORCED_OPEN,
            actor="test_auth",
            reason="must not happen",
        ),
        metadata=bearer(token) if token else None,
        timeout=RPC_TIMEOUT_S,
    )


def acquire(breaker: pb_grpc.BreakerStub, token: str | None) -> pb.AcquireResponse:
    return breaker.Acquire(
        pb.AcquireRequest(circuit="payments", node_id="py-1"),
        metadata=bearer(token) if token else None,
        timeout=RPC_TIMEOUT_S,
    )


def test_tokens_over_tls(tls_server):
    with tls_server.channel() as channel:
        breaker = pb_grpc.BreakerStub(channel)
        admin = pb_grpc.AdminStub(channel)

        # The data plane works with the data-plane token, and only with a token.
        assert acquire(breaker, DATA).allowed
        for token in (None, WRONG):
            with pytest.raises(grpc.RpcError) as e:
                acquire(breaker, token)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, token

        before = admin.GetCircuit(
            pb.GetCircuitRequest(name="payments"), metadata=bearer(ADMIN), timeout=RPC_TIMEOUT_S
        )

        # Admin with the data-plane token: PERMISSION_DENIED; none or a
        # wrong one: UNAUTHENTICATED. The token never comes back in the message.
        for token, code in (
            (DATA, grpc.StatusCode.PERMISSION_DENIED),
            (None, grpc.StatusCode.UNAUTHENTICATED),
            (WRONG, grpc.StatusCode.UNAUTHENTICATED),
        ):
            with pytest.raises(grpc.RpcError) as e:
                force_open(admin, token)
            assert e.value.code() == code, token
            assert "token-0123" not in (e.value.details() or "")

        # Nothing changed: no override, same generation.
        after = admin.GetCircuit(
            pb.GetCircuitRequest(name="payments"), metadata=bearer(ADMIN), timeout=RPC_TIMEOUT_S
        )
        assert not after.snapshot.HasField("override")
        assert after.snapshot.generation == before.snapshot.generation
        assert acquire(breaker, DATA).allowed

        # Health stays open for probes.
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT_S)
        assert status.status == health_pb2.HealthCheckResponse.SERVING

        # The admin token may do everything.
        force_open(admin, ADMIN)
        assert not acquire(breaker, ADMIN).allowed

    # Secrets never reach the logs.
    for line in tls_server.output():
        assert DATA not in line and ADMIN not in line, line


def test_plaintext_connection_to_the_tls_port_fails(tls_server):
    with grpc.insecure_channel(tls_server.addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_server, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = make_certificates(other)
    creds = grpc.ssl_channel_credentials(root_certificates=other_ca)
    with grpc.secure_channel(tls_server.addr, creds) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
