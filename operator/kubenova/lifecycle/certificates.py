"""Whether to sign an agent's transfer certificate request: a pure review of what the API
server recorded about a CertificateSigningRequest (who asked, from which node) and of what
it asks for. The kubelet's serving certificates follow the same rule (the node may only
name itself); here the node comes from the agent's pod-bound token, not from the request.

A request is signed only if all of these hold:
- it names our signer and comes from one of the agent ServiceAccounts;
- the token it came with is bound to a node N (a DaemonSet pod's own token is);
- it asks for a certificate for N alone: subject CN=N, one DNS SAN N, no IPs, URIs or
  e-mails; usages server auth (plus digital signature / key encipherment), nothing else;
- its key is ECDSA P-256/P-384 or RSA of at least 2048 bits, and its signature checks.
The destination verifies a source's certificate against the chart's CA with the source's
node name as the hostname, so a certificate for N is worth nothing on another node.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kubenova.api import names

ALLOWED_USAGES = frozenset({"digital signature", "key encipherment", "server auth"})
DEFAULT_VALIDITY = datetime.timedelta(days=7)
MIN_VALIDITY = datetime.timedelta(minutes=10)  # the CSR API's own lower bound


@dataclasses.dataclass(frozen=True)
class Request:
    """A CertificateSigningRequest as the API server recorded it."""

    name: str
    signer: str
    username: str
    extra: Mapping[str, Sequence[str]]
    usages: tuple[str, ...]
    pem: bytes  # spec.request, decoded
    expiration_seconds: int | None = None


@dataclasses.dataclass(frozen=True)
class Verdict:
    approve: bool
    reason: str
    message: str
    node: str = ""
    validity: datetime.timedelta = DEFAULT_VALIDITY


def _deny(reason: str, message: str) -> Verdict:
    return Verdict(False, reason, message)


def _key(csr: x509.CertificateSigningRequest, _node: str) -> Verdict | None:
    if not csr.is_signature_valid:
        return _deny("Malformed", "the request's signature does not match its key")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        ok, what = key.curve.name in ("secp256r1", "secp384r1"), f"curve {key.curve.name}"
    elif isinstance(key, rsa.RSAPublicKey):
        ok, what = key.key_size >= 2048, f"RSA {key.key_size} bits"
    else:
        ok, what = False, type(key).__name__
    return None if ok else _deny("WeakKey", f"{what}: use ECDSA P-256/P-384 or RSA >= 2048")


def _subject(csr: x509.CertificateSigningRequest, node: str) -> Verdict | None:
    if [(a.oid, a.value) for a in csr.subject] == [(NameOID.COMMON_NAME, node)]:
        return None
    return _deny("WrongSubject", f"subject {csr.subject.rfc4514_string()}: only CN={node}")


def _names(csr: x509.CertificateSigningRequest, node: str) -> Verdict | None:
    try:
        sans = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    if sans == [x509.DNSName(node)]:
        return None
    return _deny("WrongNames", f"names {[str(n.value) for n in sans]}: only DNS {node}")


CHECKS = (_key, _subject, _names)  # in order; the first that objects decides


def review(req: Request, *, agents: frozenset[str], max_validity: datetime.timedelta) -> Verdict:
    if req.signer != names.TRANSFER_SIGNER:
        return _deny("WrongSigner", f"signer {req.signer} is not {names.TRANSFER_SIGNER}")
    if req.username not in agents:
        return _deny("NotAnAgent", f"{req.username} is not a kubenova agent ServiceAccount")
    bound = list(req.extra.get(names.EXTRA_NODE_NAME, ()))
    if len(bound) != 1 or not bound[0]:
        return _deny("NotNodeBound", "the request's token is bound to no node (no pod's token)")
    node = bound[0]
    usages = set(req.usages)
    if "server auth" not in usages or not usages <= ALLOWED_USAGES:
        return _deny("WrongUsages", f"usages {sorted(usages)}: server auth and signing only")
    try:
        csr = x509.load_pem_x509_csr(req.pem)
    except ValueError as exc:
        return _deny("Malformed", f"spec.request is no PEM certificate request: {exc}")
    for check in CHECKS:
        if (objection := check(csr, node)) is not None:
            return objection
    asked = datetime.timedelta(seconds=req.expiration_seconds or DEFAULT_VALIDITY.total_seconds())
    validity = max(MIN_VALIDITY, min(asked, max_validity))
    return Verdict(True, "AgentOfNode", f"transfer certificate for node {node}", node, validity)
