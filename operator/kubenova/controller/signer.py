"""The signer of the agents' transfer certificates: observe the CertificateSigningRequests
of our signer, decide purely (lifecycle/certificates.py), approve or deny, then sign.

It runs in the leading controller only, the one process that mounts the CA's key. A request
approved by someone else (`kubectl certificate approve`) is still signed only if the review
passes, else marked Failed: the node rule is the signer's, not the approver's.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import pathlib
from typing import Any

from kubernetes_asyncio import client

from kubenova import clock, pki
from kubenova.api import names
from kubenova.kube import informer, objects, workqueue
from kubenova.lifecycle import certificates

log = logging.getLogger(__name__)
MERGE = "application/merge-patch+json"


@dataclasses.dataclass(frozen=True)
class Policy:
    agents: frozenset[str]  # the agent ServiceAccounts' usernames
    max_validity: datetime.timedelta


def request_of(body: dict[str, Any]) -> certificates.Request:
    spec = body["spec"]
    return certificates.Request(
        name=body["metadata"]["name"],
        signer=spec.get("signerName", ""),
        username=spec.get("username", ""),
        extra={k: tuple(v) for k, v in (spec.get("extra") or {}).items()},
        usages=tuple(spec.get("usages") or ()),
        pem=base64.b64decode(spec.get("request", "")),
        expiration_seconds=spec.get("expirationSeconds"),
    )


def _conditions(body: dict[str, Any]) -> set[str]:
    return {c["type"] for c in (body.get("status") or {}).get("conditions") or []}


def _condition(type_: str, reason: str, message: str) -> dict[str, Any]:
    now = clock.now().isoformat()
    return {
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


class Signer:
    def __init__(self, api: client.ApiClient, ca_dir: pathlib.Path, policy: Policy) -> None:
        self.certificates: Any = client.CertificatesV1Api(api)
        self.ca_cert, self.ca_key = pki.load_authority(
            (ca_dir / "tls.crt").read_bytes(), (ca_dir / "tls.key").read_bytes()
        )
        self.policy = policy
        self.queue = workqueue.WorkQueue(self.handle, workers=2, name="transfer signer")
        self.informer = informer.Informer(
            None,
            objects.CSR,
            "",
            lambda key, _body: self.queue.add(key),
            source=informer.CertificateRequests(api, names.TRANSFER_SIGNER),
        )

    async def run(self) -> None:
        await asyncio.gather(self.informer.run(), self.queue.run())

    async def handle(self, key: str) -> float | None:
        body = self.informer.cache.get(key)
        if body is None:
            return None
        state = _conditions(body)
        if state & {"Denied", "Failed"} or (body.get("status") or {}).get("certificate"):
            return None
        verdict = certificates.review(
            request_of(body), agents=self.policy.agents, max_validity=self.policy.max_validity
        )
        name = body["metadata"]["name"]
        if not verdict.approve:
            # Denied before approval; approved by someone else, failed: never signed.
            type_ = "Failed" if "Approved" in state else "Denied"
            log.warning("transfer certificate %s %s: %s", name, type_.lower(), verdict.message)
            await self._add_condition(body, _condition(type_, verdict.reason, verdict.message))
            return None
        if "Approved" not in state:
            body = await self._add_condition(
                body, _condition("Approved", verdict.reason, verdict.message)
            )
        certificate = pki.sign_request(
            self.ca_cert, self.ca_key, base64.b64decode(body["spec"]["request"]), verdict.validity
        )
        signed = await self.certificates.patch_certificate_signing_request_status(
            name,
            {"status": {"certificate": base64.b64encode(certificate).decode()}},
            _content_type=MERGE,
        )
        self.informer.put(self.certificates.api_client.sanitize_for_serialization(signed))
        log.info("transfer certificate %s signed: %s", name, verdict.message)
        return None

    async def _add_condition(self, body: dict[str, Any], condition: dict[str, Any]) -> Any:
        """Approved and Denied go through the approval subresource (a replace, so it
        carries the resourceVersion: a concurrent change is a conflict, retried); Failed
        through status."""
        status = dict(body.get("status") or {})
        status["conditions"] = [*(status.get("conditions") or []), condition]
        updated = {**body, "status": status}
        name = body["metadata"]["name"]
        if condition["type"] == "Failed":
            answer = await self.certificates.replace_certificate_signing_request_status(
                name, updated
            )
        else:
            answer = await self.certificates.replace_certificate_signing_request_approval(
                name, updated
            )
        raw: dict[str, Any] = self.certificates.api_client.sanitize_for_serialization(answer)
        self.informer.put(raw)
        return raw
