"""The cluster's certificates: one CA, made once, and a serving certificate per master.

Files in a PKI directory (`DIR/pki` for `rk up`): `ca.crt` and `ca.key` (0600), then
`NAME.crt` and `NAME.key` for each master. A serving certificate names every address its
master is reached at as a subjectAltName, plus `localhost` and 127.0.0.1 (the leader's
loops reach their own master over loopback). `ensure_serving` issues one again when the
master's addresses are no longer all covered (a renamed or re-addressed master), when
the CA changed, or when it expires within `RENEW_BEFORE`; otherwise it keeps the files,
so a restart changes nothing a client has pinned.

Keys are ECDSA P-256 (what kubeadm and k3s use for new clusters by default), made with
the `cryptography` package; nothing here writes ASN.1 by hand.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_YEARS = 10
SERVING_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)
LOOPBACK = ("localhost", "127.0.0.1")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # one label of a DNS name


class CertError(Exception):
    """A PKI file could not be read, or a name or address is not usable."""


@dataclass(frozen=True)
class Serving:
    cert: str  # path of the PEM certificate
    key: str  # path of the PEM private key
    issued: bool  # made (or made again) by this call


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: str, data: bytes, mode: int) -> None:
    """Replace `path` atomically with `data`, never readable beyond `mode`: a fresh
    temporary file in the same directory (mkstemp: O_EXCL, 0600), chmod before the
    data goes in, fsync, rename, and the directory fsynced."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertError(f"cannot read {path}: {e.strerror}") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_cert(path: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise CertError(f"{path} is not a PEM certificate") from None


def _load_key(path: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError):
        raise CertError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{path}: expected an ECDSA key")
    return key


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             days: int) -> x509.CertificateBuilder:
    """A certificate for `key`, valid from five minutes ago (clocks a little apart)
    for `days`."""
    now = _now()
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def ensure_ca(pki_dir: str, *, name: str = "raftkube-ca") -> str:
    """The CA certificate's path; the CA is made on the first call and kept after."""
    os.makedirs(pki_dir, exist_ok=True)
    cert_path, key_path = os.path.join(pki_dir, CA_CERT), os.path.join(pki_dir, CA_KEY)
    have = [os.path.exists(cert_path), os.path.exists(key_path)]
    if all(have):
        _load_cert(cert_path), _load_key(key_path)  # readable, or a clear error
        return cert_path
    if any(have):
        # Never a new CA over half of an old one: every client that holds it would be
        # locked out, and a copied-in ca.crt (to verify, without its key) is common.
        missing = key_path if have[0] else cert_path
        raise CertError(f"{missing} is missing, and {pki_dir} holds the rest of a CA: "
                        "bring it back, or issue certificates where the whole CA is")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_builder(subject, subject, key, 365 * CA_YEARS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path


def san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    """subjectAltNames for `hosts` (IP addresses or DNS names) and loopback, in order,
    without repeats; CertError names a host that is neither."""
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for host in [*hosts, *LOOPBACK]:
        host = host.strip().strip("[]")
        if not host or host in seen or host in ("0.0.0.0", "::"):
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if len(host) > 253 or not all(_LABEL.fullmatch(label)
                                      for label in host.rstrip(".").lower().split(".")):
            raise CertError(f"--san: {host!r} is neither an IP address nor a DNS name "
                            "(ASCII letters, digits and inner hyphens; IDNA-encode others)")
        names.append(x509.DNSName(host.lower()))
    return names


def covered(cert: x509.Certificate, hosts: list[str]) -> bool:
    """Whether every host (and loopback) is among the certificate's subjectAltNames."""
    try:
        have = set(cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return False
    return set(san_entries(hosts)) <= have


def ensure_serving(pki_dir: str, name: str, hosts: list[str]) -> Serving:
    """A serving certificate for master `name`, signed by the CA in `pki_dir`, that
    covers `hosts`: kept when it still does, issued (again) when not."""
    if not name or "/" in name or name.startswith(".") or name == "ca":
        raise CertError(f"--name: {name!r} cannot name a certificate file")
    sans = san_entries(hosts)
    ca_cert_path = ensure_ca(pki_dir)
    ca_cert = _load_cert(ca_cert_path)
    cert_path, key_path = os.path.join(pki_dir, f"{name}.crt"), os.path.join(pki_dir,
                                                                            f"{name}.key")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        cert = _load_cert(cert_path)
        _load_key(key_path)
        fresh = cert.not_valid_after_utc - _now() > RENEW_BEFORE
        if fresh and cert.issuer == ca_cert.subject and covered(cert, hosts) and _signed_by(
                cert, ca_cert):
            return Serving(cert_path, key_path, issued=False)
    ca_key = _load_key(os.path.join(pki_dir, CA_KEY))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_builder(subject, ca_cert.subject, key, SERVING_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_encipherment=False, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False),
                critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return Serving(cert_path, key_path, issued=True)


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def self_signed(name: str, hosts: list[str], *, days: int = SERVING_DAYS
                ) -> tuple[bytes, bytes, str]:
    """A self-signed serving certificate for `hosts` (an agent's API, which the masters
    verify by its SHA-256 fingerprint, published on its Node): (certificate PEM, key
    PEM, fingerprint in hex)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_builder(subject, subject, key, days)
            .add_extension(x509.SubjectAlternativeName(san_entries(hosts)), critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM), _key_pem(key),
            cert.fingerprint(hashes.SHA256()).hex())


def names(cert_path: str) -> set[str]:
    """The IP addresses and DNS names a certificate's subjectAltNames hold."""
    try:
        sans = _load_cert(cert_path).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(n.value) for n in sans if isinstance(n, (x509.IPAddress, x509.DNSName))}


def expires(cert_path: str) -> datetime.datetime:
    return _load_cert(cert_path).not_valid_after_utc


def ca_pem(pki_dir: str) -> str:
    return _read(os.path.join(pki_dir, CA_CERT)).decode()
