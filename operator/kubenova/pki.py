"""Certificates and keys: the local control plane's (what envtest's TinyCA does) and the
webhook server's self-signed serving certificate.

One CA signs the API server's serving certificate (SANs: 127.0.0.1, localhost) and the
client certificates (CN = user, O = groups); a separate RSA key signs service-account tokens.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import pathlib
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)  # a dev control plane outlives no certificate


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())  # fast to generate, accepted by Go's TLS


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _usage(**granted: bool) -> x509.KeyUsage:
    """Key usage: digital signature plus what is `granted`, nothing else."""
    flags = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
        False,
    )  # fmt: skip
    return x509.KeyUsage(digital_signature=True, **{**flags, **granted})


@dataclasses.dataclass(frozen=True)
class Pair:
    cert: pathlib.Path
    key: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: pathlib.Path

    @classmethod
    def create(cls, directory: pathlib.Path, name: str) -> Authority:
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        path = directory / f"{name}.crt"
        path.write_bytes(_pem_cert(cert))
        (directory / f"{name}.key").write_bytes(_pem_key(key))
        return cls(key=key, cert=cert, path=path)

    def issue(
        self,
        directory: pathlib.Path,
        name: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server_ips: tuple[str, ...] = (),
        server_dns: tuple[str, ...] = (),
    ) -> Pair:
        """Sign a leaf: a server certificate if SANs are given, else a client certificate."""
        key = _key()
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        is_server = bool(server_ips or server_dns)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if is_server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if is_server:
            sans: list[x509.GeneralName] = [
                x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips
            ]
            sans += [x509.DNSName(d) for d in server_dns]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        pair = Pair(cert=directory / f"{name}.crt", key=directory / f"{name}.key")
        pair.cert.write_bytes(_pem_cert(cert))
        pair.key.write_bytes(_pem_key(key))
        pair.key.chmod(0o600)
        return pair


def service_account_keys(directory: pathlib.Path) -> Pair:
    """RSA key pair that signs and verifies service-account tokens (cert = public key PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pair = Pair(cert=directory / "sa.pub", key=directory / "sa.key")
    pair.key.write_bytes(_pem_key(key))
    pair.cert.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pair


# --- the agents' transfer certificates (CertificateSigningRequests) ----------------------


def transfer_request(node: str) -> tuple[bytes, bytes]:
    """A fresh key and a certificate request for `node` (CN and the one DNS name): what an
    agent asks the controller's signer for. Returns (key PEM, request PEM)."""
    key = _key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem_key(key), csr.public_bytes(serialization.Encoding.PEM)


def load_authority(cert_pem: bytes, key_pem: bytes) -> tuple[x509.Certificate, Any]:
    """A CA from PEM (the chart's: Helm's genCA makes RSA keys; ours are ECDSA)."""
    return x509.load_pem_x509_certificate(cert_pem), serialization.load_pem_private_key(
        key_pem, password=None
    )


def sign_request(
    ca_cert: x509.Certificate, ca_key: Any, request_pem: bytes, validity: datetime.timedelta
) -> bytes:
    """The serving certificate for an approved request: its subject, its names and key,
    server auth only, valid from a little before now for `validity`. Returns PEM."""
    csr = x509.load_pem_x509_csr(request_pem)
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    now = datetime.datetime.now(datetime.UTC)
    rsa_key = isinstance(csr.public_key(), rsa.RSAPublicKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks a little behind
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(key_encipherment=rsa_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(names, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem_cert(cert)
