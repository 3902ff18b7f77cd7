"""The transfer signer's review: a node-bound agent token gets a certificate for its own
node, and nothing else gets anything (another node's name, an extra name or usage, a weak
key, a token bound to no node, another user)."""

from __future__ import annotations

import datetime
import pathlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kubenova import pki
from kubenova.api import names
from kubenova.lifecycle import certificates

AGENT = "system:serviceaccount:kubenova-system:kubenova-agent"
ON_A = {names.EXTRA_NODE_NAME: ("node-a",)}
USAGES = ("digital signature", "server auth")
WEEK = datetime.timedelta(days=7)


def request(
    pem: bytes | None = None,
    *,
    username: str = AGENT,
    extra: dict[str, tuple[str, ...]] | None = None,
    usages: tuple[str, ...] = USAGES,
    signer: str = names.TRANSFER_SIGNER,
    expiration: int | None = None,
) -> certificates.Request:
    return certificates.Request(
        name="kubenova-transfer-node-a-0123456789",
        signer=signer,
        username=username,
        extra=ON_A if extra is None else extra,
        usages=usages,
        pem=pki.transfer_request("node-a")[1] if pem is None else pem,
        expiration_seconds=expiration,
    )


def custom_csr(
    cn: str = "node-a",
    sans: list[x509.GeneralName] | None = None,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None,
    organization: str = "",
) -> bytes:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans is None:
        sans = [x509.DNSName("node-a")]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signed = builder.sign(key or ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.PEM)


def review(req: certificates.Request) -> certificates.Verdict:
    return certificates.review(req, agents=frozenset({AGENT}), max_validity=WEEK * 4)


def test_an_agent_gets_a_certificate_for_the_node_its_token_is_bound_to() -> None:
    verdict = review(request())
    assert (verdict.approve, verdict.node, verdict.validity) == (True, "node-a", WEEK)


def test_the_validity_asked_for_is_kept_within_the_signers_bounds() -> None:
    assert review(request(expiration=3600)).validity == datetime.timedelta(hours=1)
    assert review(request(expiration=60)).validity == certificates.MIN_VALIDITY
    assert review(request(expiration=365 * 86400)).validity == WEEK * 4


@pytest.mark.parametrize(
    ("req", "reason"),
    [
        (request(custom_csr("node-b", [x509.DNSName("node-b")])), "WrongSubject"),
        (request(custom_csr(sans=[x509.DNSName("node-b")])), "WrongNames"),
        (request(custom_csr(sans=[x509.DNSName("node-a"), x509.DNSName("node-b")])), "WrongNames"),
        (request(custom_csr(sans=[])), "WrongNames"),
        (request(custom_csr(organization="system:masters")), "WrongSubject"),
        (request(extra={names.EXTRA_NODE_NAME: ("node-b",)}), "WrongSubject"),
        (request(extra={}), "NotNodeBound"),
        (request(username="system:serviceaccount:default:default"), "NotAnAgent"),
        (request(username="kubernetes-admin"), "NotAnAgent"),
        (request(usages=(*USAGES, "client auth")), "WrongUsages"),
        (request(usages=("digital signature",)), "WrongUsages"),
        (request(signer="kubernetes.io/kubelet-serving"), "WrongSigner"),
        (request(custom_csr(key=rsa.generate_private_key(65537, 1024))), "WeakKey"),
        (request(custom_csr(key=ec.generate_private_key(ec.SECP521R1()))), "WeakKey"),
        (request(b"-----BEGIN CERTIFICATE REQUEST-----\nno\n-----END"), "Malformed"),
    ],
    ids=[
        "another-node",
        "another-name",
        "two-names",
        "no-name",
        "extra-subject",
        "token-of-another-node",
        "token-of-no-node",
        "another-service-account",
        "a-person",
        "client-auth",
        "no-server-auth",
        "another-signer",
        "rsa-1024",
        "p-521",
        "garbage",
    ],
)
def test_anything_else_is_denied_with_the_reason(req: certificates.Request, reason: str) -> None:
    verdict = review(req)
    assert (verdict.approve, verdict.reason) == (False, reason), verdict.message
    assert verdict.message


def test_a_signed_certificate_holds_the_request_and_serves_only(tmp_path: pathlib.Path) -> None:
    ca = pki.Authority.create(tmp_path, "transfer-ca")
    key_pem, request_pem = pki.transfer_request("node-a")
    now = datetime.datetime.now(datetime.UTC)
    cert = x509.load_pem_x509_certificate(pki.sign_request(ca.cert, ca.key, request_pem, WEEK))
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()
    assert cert.issuer == ca.cert.subject
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == (
        x509.SubjectAlternativeName([x509.DNSName("node-a")])
    )
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.not_valid_after_utc - now <= WEEK + datetime.timedelta(seconds=5)
