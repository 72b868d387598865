"""The certificate and key the REST API serves TLS with.

A configured pair (``api.tls_cert``/``api.tls_key``) is checked at start: both files readable,
a PEM certificate (chain, leaf first) and an unencrypted PEM private key that belong together.
With none configured, a self-signed pair is generated in ``<data_dir>/tls`` on the first start
(``api.crt``, and ``api.key`` with mode 0600) and reused from then on; clients trust it by
being given ``api.crt`` as their CA file.  A problem is a ``ConfigError`` naming the setting,
so the daemon exits with status 2.  Key material is never logged.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from service.config import ApiSection, ConfigError, FrontendConfig
from service.files import write_atomic

__all__ = ["TlsPair", "api_pair", "generated_pair", "wanted_names"]

log = structlog.get_logger("frontend.tls")

VALID_DAYS = 3650
#: a certificate this close to its end is announced at every start
RENEW_WARNING = datetime.timedelta(days=30)
_WILDCARDS = ("", "0.0.0.0", "::")

Name = x509.DNSName | x509.IPAddress


@dataclass(frozen=True)
class TlsPair:
    cert: Path
    key: Path


def generated_pair(data_dir: str | Path) -> TlsPair:
    """Where the self-signed pair lives: what clients of a cloud without a configured pair trust."""
    directory = Path(data_dir) / "tls"
    return TlsPair(directory / "api.crt", directory / "api.key")


def api_pair(config: FrontendConfig, where: str) -> TlsPair:
    """The pair the API serves: the configured one once checked, else the generated one (made if missing).

    ``where`` names the config file in errors, as :func:`service.config.load` does.
    """
    api = config.api
    if api.tls_cert:
        pair = TlsPair(Path(api.tls_cert), Path(api.tls_key))
        cert = _check(pair, f"{where}: api.tls_cert", f"{where}: api.tls_key")
        _announce(cert, pair, "configured")
        return pair
    pair = generated_pair(config.data_dir)
    names = wanted_names(api)
    _announce(_reuse(pair, names) or _generate(pair, names), pair, "generated")
    return pair


def wanted_names(api: ApiSection) -> list[Name]:
    """What a generated certificate must cover: the API's host and its addresses, the host that
    ``public_url`` names, this machine's names, and loopback."""
    hosts = [api.host, urlsplit(api.public_url).hostname or "", socket.gethostname(), socket.getfqdn(),
             "localhost", "127.0.0.1", "::1"]
    names: list[Name] = []
    for host in hosts:
        if host in _WILDCARDS:
            continue
        for name in [_name(host), *_addresses(host)]:
            if name not in names:
                names.append(name)
    return names


def _name(host: str) -> Name:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _addresses(host: str) -> list[Name]:
    """The addresses a host name resolves to; none for an address or a name that does not resolve."""
    if isinstance(_name(host), x509.IPAddress) or host == "localhost":
        return []
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [x509.IPAddress(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos]


def _reuse(pair: TlsPair, names: list[Name]) -> x509.Certificate | None:
    """The generated pair from an earlier start, or None if there is none to reuse.

    Half a pair (a start died between writing the key and the certificate) is replaced.  A whole
    pair that does not load stops the frontend instead: clients may trust that certificate, so
    replacing it is the operator's call.
    """
    if not (pair.cert.exists() and pair.key.exists()):
        if pair.key.exists() or pair.cert.exists():
            log.warning("api_tls_pair_incomplete", cert=str(pair.cert), key=str(pair.key))
        return None
    try:
        cert = _check(pair, "api.tls_cert (empty: the generated pair)", "api.tls_key (empty: the generated pair)")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; remove {pair.cert} and {pair.key} to have a new pair generated") from None
    missing = [str(n.value) for n in names if n not in _san(cert)]
    if missing:
        # Replacing it would break every client that trusts it; the operator decides.
        log.warning("api_tls_certificate_lacks_names", cert=str(pair.cert), missing=missing,
                    hint="remove the certificate and key to have new ones generated, then hand the new "
                         "certificate to clctl users and backends")
    return cert


def _san(cert: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _generate(pair: TlsPair, names: list[Name]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"cloudland API {socket.gethostname()}"[:64])])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            # a client whose clock is a little behind must not find it not yet valid
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            # It is its own trust anchor (clients load it as their CA file), so it is a CA that
            # can sign nothing below itself.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
    pair.cert.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # The key first: a start that dies between the two leaves a key without a certificate, which
    # the next start replaces.
    write_atomic(pair.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()), 0o600)
    write_atomic(pair.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    log.info("api_tls_certificate_generated", cert=str(pair.cert), key=str(pair.key),
             names=[str(n.value) for n in names])
    return cert


def _check(pair: TlsPair, cert_setting: str, key_setting: str) -> x509.Certificate:
    """The pair's leaf certificate, once the pair is found to be one uvicorn can serve."""
    cert_pem = _read(pair.cert, cert_setting)
    key_pem = _read(pair.key, key_setting)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise ConfigError(f"{cert_setting}: {pair.cert} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise ConfigError(f"{key_setting}: {pair.key} is encrypted; the frontend cannot ask for a passphrase, "
                          "give it the key unencrypted (readable only by the frontend's user)") from None
    except (ValueError, UnsupportedAlgorithm):
        # The library's text can quote the file; say nothing of its content.
        raise ConfigError(f"{key_setting}: {pair.key} holds no PEM private key") from None
    leaf = chain[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise ConfigError(f"{key_setting}: {pair.key} is not the key of the certificate in {pair.cert} "
                          "(the first certificate of the file must be the server's own)")
    return leaf


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


def _announce(cert: x509.Certificate, pair: TlsPair, source: str) -> None:
    expires = cert.not_valid_after_utc
    fields = {"cert": str(pair.cert), "source": source, "expires": expires.isoformat(),
              "sha256": cert.fingerprint(hashes.SHA256()).hex(":")}
    if expires - datetime.datetime.now(datetime.timezone.utc) < RENEW_WARNING:
        log.warning("api_tls_certificate_expiring", **fields)
    else:
        log.info("api_tls_certificate", **fields)
