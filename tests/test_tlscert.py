"""frontend.tlscert: the API's certificate is generated once (key 0600), reused after, and a
configured pair that cannot be served stops the frontend with a message naming the setting."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import stat
from pathlib import Path

import pytest
import structlog.testing
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from frontend.tlscert import TlsPair, api_pair, generated_pair
from service.config import ApiSection, ConfigError, FrontendConfig, load
from tests.support.daemons import run_daemon

WHERE = "/etc/cloudland/frontend.yaml"


def _config(data_dir: Path, **api: object) -> FrontendConfig:
    return FrontendConfig(data_dir=str(data_dir), api=ApiSection(**api))  # type: ignore[arg-type]


def _cert(pair: TlsPair) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes())


def _names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in san}


def _pair_elsewhere(directory: Path) -> TlsPair:
    """A valid pair outside any data_dir, to configure."""
    with structlog.testing.capture_logs():
        return api_pair(_config(directory), WHERE)


# Generated -----------------------------------------------------------------------------------


def test_first_start_generates_a_self_signed_pair(tmp_path: Path) -> None:
    config = _config(tmp_path, host="127.0.0.2", public_url="https://controller.example:8443")
    with structlog.testing.capture_logs() as logs:
        pair = api_pair(config, WHERE)
    assert pair == generated_pair(tmp_path) == TlsPair(tmp_path / "tls" / "api.crt", tmp_path / "tls" / "api.key")
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.cert.parent.stat().st_mode) == 0o700
    assert [p.name for p in pair.cert.parent.iterdir() if p.name.startswith(".")] == []

    cert = _cert(pair)
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=3640) < lifetime <= datetime.timedelta(days=3650)
    names = _names(cert)
    assert {"127.0.0.2", "controller.example", "localhost", "127.0.0.1", "::1", socket.gethostname()} <= names
    # The certificate is its own trust anchor: it verifies its own signature.
    cert.verify_directly_issued_by(cert)
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()

    events = [e["event"] for e in logs]
    assert events == ["api_tls_certificate_generated", "api_tls_certificate"], logs
    assert "BEGIN" not in json.dumps(logs, default=str)  # no PEM of any kind in the logs


def test_a_wildcard_host_is_not_a_name(tmp_path: Path) -> None:
    with structlog.testing.capture_logs():
        pair = api_pair(_config(tmp_path, host="0.0.0.0"), WHERE)
    names = _names(_cert(pair))
    assert "0.0.0.0" not in names and {"localhost", "127.0.0.1"} <= names


def test_later_starts_reuse_the_pair(tmp_path: Path) -> None:
    config = _config(tmp_path)
    with structlog.testing.capture_logs():
        first = api_pair(config, WHERE)
    cert, key = first.cert.read_bytes(), first.key.read_bytes()
    with structlog.testing.capture_logs() as logs:
        again = api_pair(config, WHERE)
    assert again == first and again.cert.read_bytes() == cert and again.key.read_bytes() == key
    assert [e["event"] for e in logs] == ["api_tls_certificate"]


def test_a_reused_certificate_that_lacks_a_name_is_kept_and_reported(tmp_path: Path) -> None:
    with structlog.testing.capture_logs():
        first = api_pair(_config(tmp_path), WHERE)
    cert = first.cert.read_bytes()
    with structlog.testing.capture_logs() as logs:
        api_pair(_config(tmp_path, public_url="https://new-name.example:8080"), WHERE)
    assert first.cert.read_bytes() == cert
    lacks = [e for e in logs if e["event"] == "api_tls_certificate_lacks_names"]
    assert lacks and lacks[0]["missing"] == ["new-name.example"] and lacks[0]["log_level"] == "warning"


def test_half_a_pair_is_replaced(tmp_path: Path) -> None:
    pair = generated_pair(tmp_path)
    pair.key.parent.mkdir(parents=True)
    pair.key.write_bytes(b"left by a start that died\n")
    with structlog.testing.capture_logs() as logs:
        api_pair(_config(tmp_path), WHERE)
    assert "api_tls_pair_incomplete" in [e["event"] for e in logs]
    serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600


def test_a_damaged_generated_pair_is_not_silently_replaced(tmp_path: Path) -> None:
    with structlog.testing.capture_logs():
        pair = api_pair(_config(tmp_path), WHERE)
    pair.cert.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        api_pair(_config(tmp_path), WHERE)
    assert f"{pair.cert} holds no PEM certificate" in str(info.value)
    assert f"remove {pair.cert} and {pair.key}" in str(info.value)


# Configured ------------------------------------------------------------------------------------


def test_a_configured_pair_is_served_as_it_is(tmp_path: Path) -> None:
    own = _pair_elsewhere(tmp_path / "own")
    data_dir = tmp_path / "data"
    with structlog.testing.capture_logs() as logs:
        pair = api_pair(_config(data_dir, tls_cert=str(own.cert), tls_key=str(own.key)), WHERE)
    assert pair == own
    assert not (data_dir / "tls").exists()
    assert [(e["event"], e["source"]) for e in logs] == [("api_tls_certificate", "configured")]


def test_a_configured_chain_is_accepted_leaf_first(tmp_path: Path) -> None:
    own = _pair_elsewhere(tmp_path / "own")
    other = _pair_elsewhere(tmp_path / "other")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(own.cert.read_bytes() + other.cert.read_bytes())
    with structlog.testing.capture_logs():
        assert api_pair(_config(tmp_path, tls_cert=str(chain), tls_key=str(own.key)), WHERE).cert == chain
    chain.write_bytes(other.cert.read_bytes() + own.cert.read_bytes())
    with pytest.raises(ConfigError, match="is not the key of the certificate"):
        api_pair(_config(tmp_path, tls_cert=str(chain), tls_key=str(own.key)), WHERE)


def _configured_error(tmp_path: Path, cert: Path, key: Path) -> str:
    with pytest.raises(ConfigError) as info:
        api_pair(_config(tmp_path / "data", tls_cert=str(cert), tls_key=str(key)), WHERE)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{WHERE}: api.tls_"), message
    return message


def test_a_missing_configured_file_is_named(tmp_path: Path) -> None:
    own = _pair_elsewhere(tmp_path / "own")
    missing = tmp_path / "missing.crt"
    assert _configured_error(tmp_path, missing, own.key) == \
        f"{WHERE}: api.tls_cert: cannot read {missing}: No such file or directory"
    assert _configured_error(tmp_path, own.cert, tmp_path / "missing.key") == \
        f"{WHERE}: api.tls_key: cannot read {tmp_path / 'missing.key'}: No such file or directory"
    assert _configured_error(tmp_path, tmp_path, own.key).startswith(f"{WHERE}: api.tls_cert: cannot read {tmp_path}")


def test_files_that_are_not_a_matching_pair_are_refused(tmp_path: Path) -> None:
    own = _pair_elsewhere(tmp_path / "own")
    other = _pair_elsewhere(tmp_path / "other")
    assert "holds no PEM certificate" in _configured_error(tmp_path, own.key, own.key)
    secret = own.key.read_text()
    message = _configured_error(tmp_path, own.cert, own.cert)
    assert "api.tls_key" in message and "holds no PEM private key" in message
    assert _configured_error(tmp_path, own.cert, other.key).startswith(f"{WHERE}: api.tls_key: {other.key} is not "
                                                                       f"the key of the certificate in {own.cert}")
    assert secret not in message


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    own = _pair_elsewhere(tmp_path / "own")
    key = serialization.load_pem_private_key(own.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"passphrase")))
    assert "is encrypted" in _configured_error(tmp_path, own.cert, encrypted)


# The settings -----------------------------------------------------------------------------------


def test_the_api_url_says_https_unless_tls_is_off() -> None:
    assert ApiSection().url == "https://127.0.0.1:8080"
    assert ApiSection(tls=False).url == "http://127.0.0.1:8080"
    assert ApiSection(public_url="https://api.example/").url == "https://api.example"


@pytest.mark.parametrize("text,expected", [
    ("api:\n  tls_cert: /etc/a.crt\n", "api.tls_key: must be set with the other of api.tls_cert and api.tls_key"),
    ("api:\n  tls_key: /etc/a.key\n", "api.tls_cert: must be set with the other of api.tls_cert and api.tls_key"),
    ("api:\n  tls: false\n  tls_cert: /a.crt\n  tls_key: /a.key\n", "api.tls_cert: set, but api.tls is false"),
    ("api:\n  tls: maybe\n", "api.tls: must be true or false (got 'maybe')"),
])
def test_tls_setting_errors(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "frontend.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(FrontendConfig, path)
    assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)


def test_the_frontend_exits_2_on_an_unusable_configured_pair(tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    path = tmp_path / "frontend.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\ncontrol_socket: {tmp_path / 'fe.sock'}\n"
                    f"api:\n  tls_cert: {missing}\n  tls_key: {tmp_path / 'missing.key'}\n")
    proc = run_daemon("frontend", path)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.splitlines()[-1] == \
        f"cloudland-frontend: {path}: api.tls_cert: cannot read {missing}: No such file or directory"


def test_a_certificate_of_an_ip_host_names_the_address(tmp_path: Path) -> None:
    with structlog.testing.capture_logs():
        pair = api_pair(_config(tmp_path, host="::1", public_url="https://[fd00::7]:8080"), WHERE)
    san = _cert(pair).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    addresses = san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("fd00::7") in addresses and ipaddress.ip_address("::1") in addresses
