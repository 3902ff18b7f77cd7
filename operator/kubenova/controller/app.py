"""kopf wiring: the validating webhook's server and handler, start-up and clean-up.

kopf earns its place as the admission server; the watches are kubenova's own informers
(kube/informer.py), whose relists replace the store's view (kopf's re-list after a watch
gap never reports the objects deleted meanwhile). kopf adds no annotations, finalizers or
progress records of its own, so every write to an object is one kubenova decided to make.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import pathlib
from collections.abc import Iterable
from typing import Any

import kopf
from kubernetes_asyncio import client

from kubenova import faults, pki
from kubenova import settings as settings_mod
from kubenova.api import flavor, instance, names
from kubenova.controller import runtime
from kubenova.kube import objects
from kubenova.lifecycle import admission

log = logging.getLogger(__name__)

WEBHOOK_CONFIG = f"validating.{names.GROUP}"
DEFAULT_CERT_DIR = "/tmp/kubenova-webhook"
# The handler id is the URL path the webhook server serves it at; the Helm chart's
# ValidatingWebhookConfiguration names the same path.
WEBHOOK_ID = "validate-instance"
# The webhook checks the flavor only: updates that leave spec.flavor alone (labels,
# annotations, the controller's own writes: most updates) are not sent, a round trip saved
# on each. The Helm chart's configuration carries the same rule (a test compares them).
# A return to status.previousFlavor (a declarative revert, or the controller rolling a
# failed resize back) is not sent either: with failurePolicy Fail and every replica gone, a
# user can still go back to what ran before.
MATCH_CONDITIONS = [
    {
        "name": "flavor-set-or-changed",
        "expression": (
            "request.operation == 'CREATE' || object.spec.flavor != oldObject.spec.flavor"
        ),
    },
    {
        "name": "not-back-to-the-previous-flavor",
        "expression": (
            "request.operation == 'CREATE' || !has(object.status) || "
            "!has(object.status.previousFlavor) || "
            "object.spec.flavor != object.status.previousFlavor.name"
        ),
    },
]
RULES = [
    {
        "apiGroups": [names.GROUP],
        "apiVersions": [names.VERSION],
        "resources": ["instances"],
        "operations": ["CREATE", "UPDATE"],
        "scope": "*",
    }
]


class NoDiffBase(kopf.DiffBaseStorage):
    """No change detection: kubenova has only raw-event handlers, so kopf's diff base (a
    deep copy and a diff of every object on every watch event, ~5 % of the controller's
    busy time under 1,000 concurrent resizes in py-spy) serves nothing. Nothing is stored
    on the objects either way."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure(settings: kopf.OperatorSettings, cfg: settings_mod.Controller) -> None:
    settings.posting.level = logging.WARNING  # kubenova posts its own events
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.watching.connect_timeout = 10
    if cfg.webhook_port:
        settings.admission.server = _webhook_server(cfg)
        # Managed (make up, tests): kubenova writes the configuration itself, not kopf, whose
        # configurations have no matchConditions (every Instance update would be sent).


def webhook_configuration(url: str, ca_bundle: bytes) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration a managed controller registers for itself."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": WEBHOOK_CONFIG,
            "labels": {"app.kubernetes.io/managed-by": "kubenova"},
        },
        "webhooks": [
            {
                "name": f"{WEBHOOK_ID}.{names.GROUP}",
                "rules": RULES,
                "matchConditions": MATCH_CONDITIONS,
                # Fail: a bad flavor is refused even when the controller is slow (every replica
                # serves the webhook); confirm, revert and label edits are never sent.
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": 10,
                "admissionReviewVersions": ["v1", "v1beta1"],
                "clientConfig": {
                    "url": f"{url}/{WEBHOOK_ID}",
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                },
            }
        ],
    }


def _webhook_url(cfg: settings_mod.Controller) -> str:
    host, port = cfg.webhook_host, cfg.webhook_port
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


async def register_webhook_configuration(
    api: client.ApiClient, cfg: settings_mod.Controller
) -> None:
    """Once the webhook server answers, point the API server at it (create or replace)."""
    for _ in range(300):  # kopf starts the server soon after startup
        try:
            _, writer = await asyncio.open_connection(
                cfg.webhook_bind or cfg.webhook_host, cfg.webhook_port
            )
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        break
    ca = (pathlib.Path(cfg.webhook_cert_dir or DEFAULT_CERT_DIR) / "webhook-ca.crt").read_bytes()
    # A plain dict is sent as is (the client's typed models are not needed for that).
    body: Any = webhook_configuration(_webhook_url(cfg), ca)
    configs = client.AdmissionregistrationV1Api(api)
    try:
        await configs.create_validating_webhook_configuration(body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        current = await configs.read_validating_webhook_configuration(WEBHOOK_CONFIG)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        await configs.replace_validating_webhook_configuration(WEBHOOK_CONFIG, body)
    log.info("webhook configuration %s points at %s", WEBHOOK_CONFIG, _webhook_url(cfg))


async def unregister_webhook_configuration(
    api: client.ApiClient, cfg: settings_mod.Controller
) -> None:
    """A stopped controller's configuration would only cost every request a failed call;
    one that another controller has since pointed at itself is left alone."""
    configs = client.AdmissionregistrationV1Api(api)
    with contextlib.suppress(client.ApiException):
        current = await configs.read_validating_webhook_configuration(WEBHOOK_CONFIG)
        urls = {w.client_config.url for w in current.webhooks or []}
        if urls == {f"{_webhook_url(cfg)}/{WEBHOOK_ID}"}:
            await configs.delete_validating_webhook_configuration(
                WEBHOOK_CONFIG,
                body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(
                        resource_version=current.metadata.resource_version
                    )
                ),
            )


def _webhook_server(cfg: settings_mod.Controller) -> kopf.WebhookServer:
    """Managed: a CA and serving certificate of our own, for the host the API server calls.
    Otherwise (Helm chart): the serving certificate mounted from a Secret, whose CA the
    chart (or cert-manager) put in the webhook configuration."""
    cert_dir = pathlib.Path(cfg.webhook_cert_dir or DEFAULT_CERT_DIR)
    bind = cfg.webhook_bind or cfg.webhook_host
    if not cfg.webhook_managed:
        return kopf.WebhookServer(
            addr=bind,
            port=cfg.webhook_port,
            certfile=str(cert_dir / "tls.crt"),
            pkeyfile=str(cert_dir / "tls.key"),
        )
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca = pki.Authority.create(cert_dir, "webhook-ca")
    serving = ca.issue(
        cert_dir,
        "webhook",
        common_name=cfg.webhook_host,
        server_ips=_ips(cfg.webhook_host),
        server_dns=_dns(cfg.webhook_host),
    )
    return kopf.WebhookServer(
        addr=bind,
        port=cfg.webhook_port,
        host=cfg.webhook_host,
        certfile=str(serving.cert),
        pkeyfile=str(serving.key),
        cafile=str(ca.path),
    )


def _ips(host: str) -> tuple[str, ...]:
    return (host,) if host.replace(".", "").isdigit() else ()


def _dns(host: str) -> tuple[str, ...]:
    return () if _ips(host) else (host,)


def _rt(memo: Any) -> runtime.Runtime:
    return memo["runtime"]  # type: ignore[no-any-return]


def register_webhook() -> None:
    """Only with a webhook server: kopf refuses to start admission handlers without one.
    Which requests reach it, and the failure policy, are the webhook configuration's:
    `webhook_configuration` (make up, tests) or the Helm chart's."""
    kopf.on.validate(
        names.GROUP, names.VERSION, "instances", operations=["CREATE", "UPDATE"], id=WEBHOOK_ID
    )(on_validate_instance)


async def on_validate_instance(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """Refuse an unknown or disabled flavor and a disk down-size at `kubectl apply/edit`."""
    new_spec = instance.InstanceSpec.model_validate(dict(body.get("spec", {})))
    old = kwargs.get("old")
    previous = instance.Instance.model_validate(dict(old)) if old else None
    rt = _rt(memo)
    if delay := faults.delay("controller", "webhook"):
        await asyncio.sleep(delay)  # a slow webhook (chaos tests)
    # A Flavor created in the same `kubectl apply` may not have reached the store yet.
    chosen = rt.store.get("Flavor", new_spec.flavor) or await rt.objs.get(
        objects.FLAVOR, None, new_spec.flavor
    )
    problem = admission.flavor_change_problem(
        previous, new_spec, flavor.FlavorSpec.model_validate(chosen["spec"]) if chosen else None
    )
    if problem:
        raise kopf.AdmissionError(problem, code=422)
