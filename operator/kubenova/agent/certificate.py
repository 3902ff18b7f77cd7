"""The agent's transfer serving certificate, from the controller's signer.

A fresh key per certificate, kept in memory (and for the moment `ssl` needs to load it, in
a private temporary file): the agent posts a CertificateSigningRequest for its node with
the signer `compute.kubenova.io/transfer`, waits for the certificate, and serves with it;
at two thirds of its life it asks again and the serving context takes the new one (new
connections use it; a transfer in flight keeps its session). The API server records the
request's author, and the pod-bound token's node, which is what the signer checks.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import ssl
import tempfile
from typing import Any

from cryptography import x509
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova import clock, pki
from kubenova.api import names

log = logging.getLogger(__name__)
POLL_SECONDS, POLL_MAX_SECONDS = 1.0, 10.0  # for the signer's answer
DENIED_RETRY_SECONDS = 60.0  # a denied request is asked again (the admin may fix the cause)


class CertificateDeniedError(Exception):
    pass


def client_context(ca_file: str) -> ssl.SSLContext:
    """What a destination verifies sources with: the chart's CA alone (not the system's),
    the hostname checked against the source's node name (server_hostname)."""
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = True
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ServingCertificate:
    def __init__(self, api: client.ApiClient, node: str, validity_seconds: float) -> None:
        self.certificates: Any = client.CertificatesV1Api(api)
        self.node = node
        self.validity = validity_seconds
        self.context: ssl.SSLContext | None = None
        self.expires: datetime.datetime | None = None
        self.renew_at: datetime.datetime | None = None

    async def obtain(self) -> ssl.SSLContext:
        """A serving context with a signed certificate; waits (and asks again after a
        denial) for as long as it takes."""
        while True:
            try:
                key_pem, cert_pem = await self._issue()
            except CertificateDeniedError as exc:
                log.error(
                    "transfer certificate for %s refused: %s; asking again in %.0fs",
                    self.node, exc, DENIED_RETRY_SECONDS,
                )  # fmt: skip
                await asyncio.sleep(DENIED_RETRY_SECONDS)
                continue
            except (ApiException, OSError) as exc:
                log.warning("transfer certificate for %s: %r; again in 5s", self.node, exc)
                await asyncio.sleep(5)
                continue
            context = self.context or ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            _load(context, key_pem, cert_pem)
            self.context = context
            cert = x509.load_pem_x509_certificate(cert_pem)
            self.expires = cert.not_valid_after_utc
            start = cert.not_valid_before_utc
            self.renew_at = start + (self.expires - start) * 2 / 3
            log.info("transfer certificate for %s valid until %s", self.node, self.expires)
            return context

    async def renew_forever(self) -> None:
        """Ask again at two thirds of each certificate's life (the kubelet's rotation)."""
        while True:
            assert self.renew_at is not None
            await asyncio.sleep(max(1.0, (self.renew_at - clock.now()).total_seconds()))
            await self.obtain()

    async def _issue(self) -> tuple[bytes, bytes]:
        key_pem, request_pem = pki.transfer_request(self.node)
        name = f"kubenova-transfer-{self.node}-{hashlib.sha256(request_pem).hexdigest()[:10]}"
        manifest = {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name, "labels": {names.LABEL_NODE: self.node}},
            "spec": {
                "request": base64.b64encode(request_pem).decode(),
                "signerName": names.TRANSFER_SIGNER,
                "usages": ["digital signature", "server auth"],
                "expirationSeconds": int(self.validity),
            },
        }
        await self.certificates.create_certificate_signing_request(manifest)
        log.info("transfer certificate for %s asked for (%s)", self.node, name)
        delay = POLL_SECONDS
        while True:
            csr = await self.certificates.read_certificate_signing_request(name)
            status = csr.status
            for c in (status.conditions if status else None) or []:
                if c.type in ("Denied", "Failed"):
                    raise CertificateDeniedError(f"{name}: {c.type} ({c.reason}): {c.message}")
            if status and status.certificate:
                return key_pem, base64.b64decode(status.certificate)
            await asyncio.sleep(delay)
            delay = min(POLL_MAX_SECONDS, delay * 1.5)  # a controller away long: fewer reads


def _load(context: ssl.SSLContext, key_pem: bytes, cert_pem: bytes) -> None:
    """`ssl` loads certificates from files only: a private directory, removed at once."""
    with tempfile.TemporaryDirectory(prefix="kubenova-transfer-") as directory:
        cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        with open(cert, "wb") as f:
            f.write(cert_pem)
        with open(os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(key_pem)
        context.load_cert_chain(cert, key)
