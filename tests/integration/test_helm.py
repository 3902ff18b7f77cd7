"""The Helm chart against a real API server: lint, render, install, upgrade, schema, and
the controller serving the webhook with the certificate the chart made."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import socket
import ssl
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hack import controlplane

from kubenova import settings
from kubenova.controller import app
from tests import builders, helm, kube
from tests import env as kubenova_env

# One control plane per module: keep its tests on one worker.
pytestmark = pytest.mark.xdist_group(__name__)

NS = helm.NAMESPACE
SERVICE_DNS = f"kubenova-webhook.{NS}.svc"  # what the API server calls
CRD_NAMES = sorted(p.stem for p in kube.CRDS.glob("*.yaml"))

# Every object a default install creates: (kind for kubectl, namespace or "", name).
OBJECTS = [
    *[("customresourcedefinition", "", name) for name in CRD_NAMES],
    ("serviceaccount", NS, "kubenova-controller"),
    ("serviceaccount", NS, "kubenova-agent"),
    ("clusterrole", "", "kubenova-controller"),
    ("clusterrole", "", "kubenova-agent"),
    ("clusterrolebinding", "", "kubenova-controller"),
    ("clusterrolebinding", "", "kubenova-agent"),
    ("role", NS, "kubenova-controller"),
    ("rolebinding", NS, "kubenova-controller"),
    ("role", NS, "kubenova-agent"),
    ("rolebinding", NS, "kubenova-agent"),
    ("secret", NS, "kubenova-transfer-key"),
    ("deployment", NS, "kubenova-controller"),
    ("daemonset", NS, "kubenova-agent"),
    ("service", NS, "kubenova-webhook"),
    ("secret", NS, "kubenova-webhook-tls"),
    ("validatingwebhookconfiguration", "", "kubenova-webhook"),
]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    # No kube-controller-manager: nothing here needs Deployments reconciled or pods.
    directory = tmp_path_factory.mktemp("helm-controlplane")
    with controlplane.running(directory, controller_manager=False) as started:
        yield started


@pytest.fixture(scope="module")
def installed(plane: controlplane.ControlPlane) -> kube.Kubectl:
    result = helm.Helm(plane.kubeconfig).install()
    assert result.ok, result.stderr
    # NOTES.txt: how to check the release and do a first resize.
    assert "rollout status deployment/kubenova-controller" in result.stdout
    assert "compute.kubenova.io/resize=confirm" in result.stdout
    return kube.Kubectl(plane.kubeconfig)


def test_chart_crds_are_the_generated_crds() -> None:
    copies = {p.name: p.read_text() for p in (helm.CHART / "files" / "crds").glob("*.yaml")}
    originals = {p.name: p.read_text() for p in kube.CRDS.glob("*.yaml")}
    assert copies == originals, "the chart's CRDs drifted from crds/: run `make crds`"
    rendered = {
        doc["metadata"]["name"]: doc
        for doc in helm.Helm().template()
        if doc["kind"] == "CustomResourceDefinition"
    }
    for name in CRD_NAMES:
        crd = rendered[name]
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        assert crd == yaml.safe_load((kube.CRDS / f"{name}.yaml").read_text())


@pytest.mark.parametrize(
    ("values", "present", "absent"),
    [
        ({}, {"CustomResourceDefinition", "Secret/kubenova-transfer-key"}, set()),
        ({"crds.install": "false"}, set(), {"CustomResourceDefinition"}),
        (
            {"webhook.enabled": "false"},
            {"Secret/kubenova-transfer-key"},
            {"ValidatingWebhookConfiguration", "Service", "Secret/kubenova-webhook-tls"},
        ),
        (
            {"webhook.certManager.enabled": "true"},
            {"Certificate", "Issuer", "ValidatingWebhookConfiguration"},
            {"Secret/kubenova-webhook-tls"},
        ),
    ],
    ids=["default", "no-crds", "no-webhook", "cert-manager"],
)
def test_switches_render_what_they_say(
    values: dict[str, str], present: set[str], absent: set[str]
) -> None:
    """Kinds, or Kind/name where a kind has several objects."""
    docs = helm.Helm().template(values)
    rendered = {d["kind"] for d in docs} | {f"{d['kind']}/{d['metadata']['name']}" for d in docs}
    assert present <= rendered
    assert not absent & rendered


def test_crds_keep_false_drops_the_keep_annotation() -> None:
    crds = [d for d in helm.Helm().template({"crds.keep": "false"}) if d["kind"].startswith("Cus")]
    assert crds
    assert all("annotations" not in crd["metadata"] for crd in crds)


def test_agents_mount_the_transfer_key_and_nothing_reads_secrets() -> None:
    """The agents derive transfer tokens from the key Secret mounted into their pods; no
    Role of the chart grants anything on Secrets."""
    docs = helm.Helm().template()
    (agent,) = [d for d in docs if d["kind"] == "DaemonSet"]
    pod = agent["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert env["KUBENOVA_TRANSFER_KEY_FILE"] == f"{mounts['transfer-key']}/key"
    assert volumes["transfer-key"]["secret"]["secretName"] == "kubenova-transfer-key"
    for role in (d for d in docs if d["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "secrets" not in rule["resources"], role["metadata"]["name"]


def test_cert_manager_injects_the_ca() -> None:
    docs = helm.Helm().template({"webhook.certManager.enabled": "true"})
    (hook,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    (cert,) = [d for d in docs if d["kind"] == "Certificate"]
    annotation = hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert annotation == f"{NS}/{cert['metadata']['name']}"
    assert "kubenova-webhook.kubenova-system.svc" in cert["spec"]["dnsNames"]


def test_chart_sends_the_webhook_what_the_managed_controller_sends() -> None:
    """The chart's configuration and the one `make up`'s controller registers itself select
    the same requests: creates and flavor changes of Instances, nothing else."""
    docs = helm.Helm().template()
    (hook,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    (chart,) = hook["webhooks"]
    (managed,) = app.webhook_configuration("https://127.0.0.1:1", b"ca")["webhooks"]
    for field in ("name", "rules", "matchConditions", "sideEffects", "matchPolicy"):
        assert chart[field] == managed[field], field


@pytest.mark.parametrize(
    "values",
    [{}, {"agent.driver": "fake"}, {"agent.driver": "kubevirt"}, {"agent.transferPort": "0"}],
)
def test_lint_passes(values: dict[str, str]) -> None:
    result = helm.Helm().run("lint", "--strict", str(helm.CHART), *helm.sets(values))
    assert result.ok, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "field", "why"),
    [
        ({"controller.weigher": "fastest"}, "/controller/weigher", "one of 'spread', 'pack'"),
        ({"agent.driver": "xen"}, "/agent/driver", "one of 'fake', 'libvirt', 'kubevirt'"),
        ({"controller.replicas": "0"}, "/controller/replicas", "minimum"),
        ({"agent.cpuAllocationRatio": "-1"}, "/agent/cpuAllocationRatio", "exclusiveMinimum"),
        ({"controller.resizeConfirmWindowSeconds": "soon"}, "/controller/resizeConfirm", "number"),
        ({"webhook.failurePolicy": "Never"}, "/webhook/failurePolicy", "'Ignore', 'Fail'"),
        ({"controller.confirmWindow": "60"}, "/controller", "'confirmWindow' not allowed"),
    ],
    ids=["weigher", "driver", "replicas", "ratio", "window-type", "failure-policy", "typo"],
)
def test_values_outside_the_schema_are_refused(
    values: dict[str, str], field: str, why: str
) -> None:
    result = helm.Helm().run("template", "x", str(helm.CHART), *helm.sets(values))
    assert not result.ok
    assert "values don't meet the specifications of the schema" in result.stderr
    assert field in result.stderr
    assert why in result.stderr


@pytest.mark.parametrize(
    "values",
    [{}, {"agent.driver": "fake", "crds.keep": "false"}, {"agent.driver": "kubevirt"}],
    ids=["default", "fake-driver", "kubevirt-driver"],
)
def test_rendered_chart_is_accepted_by_the_api_server(
    plane: controlplane.ControlPlane, values: dict[str, str]
) -> None:
    kubectl = kube.Kubectl(plane.kubeconfig)
    kubectl.run("create", "namespace", NS)  # exists already when another test installed
    rendered = helm.Helm().run(
        "template", helm.RELEASE, str(helm.CHART), "-n", NS, *helm.sets(values)
    )
    assert rendered.ok, rendered.stderr
    result = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=rendered.stdout)
    assert result.ok, result.stderr
    assert "validatingwebhookconfiguration.admissionregistration.k8s.io/kubenova-webhook" in (
        result.stdout
    )


def test_install_creates_every_object(installed: kube.Kubectl) -> None:
    for kind, namespace, name in OBJECTS:
        where = ["-n", namespace] if namespace else []
        result = installed.run("get", kind, name, *where, "-o", "name")
        assert result.ok, f"{kind} {name} missing after helm install: {result.stderr}"
    deployment = installed.get_json("deployment", "kubenova-controller", "-n", NS)
    assert deployment["spec"]["replicas"] == 2


def test_webhook_ca_matches_the_secret_and_survives_upgrade(
    plane: controlplane.ControlPlane, installed: kube.Kubectl
) -> None:
    before = helm.secret_data(installed, "kubenova-webhook-tls")
    hook = installed.get_json("validatingwebhookconfiguration", "kubenova-webhook")
    (webhook,) = hook["webhooks"]
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["clientConfig"]["service"]["path"] == "/validate-instance"
    assert webhook["clientConfig"]["caBundle"] == kube_b64(before["ca.crt"])

    key = helm.secret_data(installed, "kubenova-transfer-key")["key"]
    assert len(key) >= 32

    upgraded = helm.Helm(plane.kubeconfig).install({"controller.weigher": "pack"})
    assert upgraded.ok, upgraded.stderr
    assert helm.secret_data(installed, "kubenova-webhook-tls") == before
    # A new key would fail the transfers in flight: it is generated once, like the CA.
    assert helm.secret_data(installed, "kubenova-transfer-key")["key"] == key
    hook = installed.get_json("validatingwebhookconfiguration", "kubenova-webhook")
    assert hook["webhooks"][0]["clientConfig"]["caBundle"] == kube_b64(before["ca.crt"])


def kube_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _review(flavor: str) -> dict[str, Any]:
    instance = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {"flavor": flavor, "image": "cirros"},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b7d1c5e-0000-4000-8000-000000000001",
            "kind": {"group": "compute.kubenova.io", "version": "v1alpha1", "kind": "Instance"},
            "resource": {
                "group": "compute.kubenova.io",
                "version": "v1alpha1",
                "resource": "instances",
            },
            "namespace": "default",
            "name": "demo",
            "operation": "CREATE",
            "userInfo": {"username": "test"},
            "object": instance,
            "oldObject": None,
            "dryRun": False,
        },
    }


def test_controller_serves_the_webhook_with_the_chart_certificate(
    installed: kube.Kubectl, tmp_path: pathlib.Path
) -> None:
    """In the chart the controller mounts the webhook Secret and leaves the webhook
    configuration to the chart: an API server that trusts the chart's CA, calling the
    Service's name, gets kubenova's answer."""
    data = helm.secret_data(installed, "kubenova-webhook-tls")
    certs = tmp_path / "webhook"
    certs.mkdir()
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (certs / key).write_bytes(data[key])
    port = controlplane.free_port()
    controller = kubenova_env.Process(
        "controller",
        [
            sys.executable,
            "-m",
            "kubenova.cli",
            "controller",
            f"--webhook-port={port}",
            f"--webhook-cert-dir={certs}",
            "--no-webhook-managed",
        ],
        tmp_path / "controller.log",
        {
            **os.environ,
            # kopf's kubeconfig login reads $KUBECONFIG (the --kubeconfig flag reaches
            # kubenova's own client only).
            "KUBECONFIG": str(installed.kubeconfig),
            "KUBENOVA_LEADER_ELECTION": "false",
        },
    ).start()
    try:
        context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        try:
            answer = kube.poll(lambda: _admit(port, context, "m9.huge"), timeout=60)
        except TimeoutError:
            raise AssertionError(f"webhook not served\n{controller.tail()}") from None
        assert answer["allowed"] is False, answer
        assert "m9.huge does not exist" in answer["status"]["message"]
        hooks = installed.get_json("validatingwebhookconfigurations")["items"]
        assert [h["metadata"]["name"] for h in hooks] == ["kubenova-webhook"]
    finally:
        controller.stop()


def _admit(port: int, context: ssl.SSLContext, flavor: str) -> dict[str, Any] | None:
    """POST an AdmissionReview as the API server does: TLS verified against the chart's CA
    for the Service's name, at the path the chart's webhook configuration names."""
    body = json.dumps(_review(flavor)).encode()
    head = (
        f"POST /validate-instance HTTP/1.1\r\nHost: {SERVICE_DNS}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=SERVICE_DNS) as tls,
        ):
            tls.sendall(head.encode() + body)
            response = b"".join(iter(lambda: tls.recv(65536), b""))
    except ConnectionRefusedError:
        return None  # not listening yet
    status, _, rest = response.partition(b"\r\n")
    assert b" 200 " in status, response
    return json.loads(rest.partition(b"\r\n\r\n")[2])["response"]  # type: ignore[no-any-return]


def _container_env(docs: list[dict[str, Any]], kind: str) -> dict[str, str]:
    """The literal environment the chart gives a component's container, downward-API
    fields filled as the kubelet would."""
    (workload,) = [d for d in docs if d["kind"] == kind]
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    fields = {"spec.nodeName": "node-7", "status.podIP": "10.1.2.3"}
    fields |= {"metadata.name": "kubenova-controller-abc", "metadata.namespace": NS}
    return {
        e["name"]: e["value"] if "value" in e else fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }


def test_every_value_reaches_its_setting() -> None:
    """Values rendered into the pods' environment are read back by kubenova's settings:
    names and formats of the chart and settings.py agree."""
    values = {
        "logLevel": "DEBUG",
        "metrics.port": "9100",
        "controller.resizeConfirmWindowSeconds": "30",
        "controller.allowResizeToSameHost": "false",
        "controller.serviceDownTimeSeconds": "45.5",
        "controller.weigher": "pack",
        "controller.retryBaseSeconds": "2",
        "controller.retryCapSeconds": "120",
        "controller.workers": "3",
        "controller.leaderElection.leaseDurationSeconds": "20",
        "agent.driver": "libvirt",
        "agent.virtType": "qemu",
        "agent.libvirtUri": "qemu+tcp://host/system",
        "agent.instancesPath": "/srv/instances",
        "agent.imagesPath": "/srv/images",
        "agent.transferPort": "9000",
        "agent.shutdownTimeoutSeconds": "5",
        "agent.heartbeatIntervalSeconds": "3",
        "agent.cpuAllocationRatio": "16",
        "agent.memoryAllocationRatio": "1.5",
        "agent.diskAllocationRatio": "2",
        "agent.workers": "6",
    }
    docs = helm.Helm().template(values)
    controller = settings.controller_from_env(_container_env(docs, "Deployment"))
    assert (controller.log_level, controller.metrics_port) == ("DEBUG", 9100)
    assert controller.resize_confirm_window_seconds == 30
    assert controller.allow_resize_to_same_host is False
    assert controller.service_down_time_seconds == 45.5
    assert controller.weigher == "pack"
    assert (controller.retry_base_seconds, controller.retry_cap_seconds) == (2, 120)
    assert (controller.workers, controller.lease_duration_seconds) == (3, 20)
    assert (controller.lease_namespace, controller.identity) == (NS, "kubenova-controller-abc")
    assert (controller.webhook_port, controller.webhook_managed) == (9443, False)
    assert controller.webhook_cert_dir == "/etc/kubenova/webhook"
    agent = settings.agent_from_env(_container_env(docs, "DaemonSet"))
    assert (agent.node, agent.transfer_host, agent.transfer_port) == ("node-7", "10.1.2.3", 9000)
    assert (agent.driver, agent.virt_type) == ("libvirt", "qemu")
    assert (agent.libvirt_uri, agent.instances_path, agent.images_path) == (
        "qemu+tcp://host/system",
        "/srv/instances",
        "/srv/images",
    )
    assert (agent.shutdown_timeout_seconds, agent.heartbeat_interval_seconds) == (5, 3)
    ratios = (agent.cpu_allocation_ratio, agent.memory_allocation_ratio)
    assert (*ratios, agent.disk_allocation_ratio) == (16, 1.5, 2)
    assert (agent.workers, agent.log_level) == (6, "DEBUG")
    fake = settings.agent_from_env(
        _container_env(
            helm.Helm().template(
                {
                    "agent.driver": "fake",
                    "agent.fake.capacity": "vcpus=4,memoryMiB=2048,diskGiB=20",
                    "agent.fake.latencySeconds": "0.5",
                }
            ),
            "DaemonSet",
        )
    )
    assert (fake.driver, fake.fake_latency_seconds) == ("fake", 0.5)
    assert (fake.capacity.vcpus, fake.capacity.memory_mib, fake.capacity.disk_gib) == (4, 2048, 20)
    kubevirt = helm.Helm().template(
        {"agent.driver": "kubevirt", "agent.instancesPath": "/srv/vms", "agent.imagesPath": "/i"}
    )
    on_node = settings.agent_from_env(_container_env(kubevirt, "DaemonSet"))
    assert (on_node.driver, on_node.instances_path, on_node.images_path) == (
        "kubevirt",
        "/srv/vms",
        "/i",
    )
    agent = next(d for d in kubevirt if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in agent["containers"][0]["volumeMounts"]}
    paths = {v["name"]: v.get("hostPath", {}).get("path") for v in agent["volumes"]}
    # The same path in the pod and on the node: the VirtualMachine's hostDisk names it.
    assert mounts["instances"] == paths["instances"] == "/srv/vms"
    assert "libvirt-socket" not in mounts


def test_webhook_is_called_only_when_the_flavor_is_set_or_changed(
    tmp_path: pathlib.Path,
) -> None:
    """With failurePolicy Fail and no controller behind the Service, every call the API
    server makes fails: a label or annotation edit goes through (not sent), a flavor
    change is refused (sent)."""
    with controlplane.running(tmp_path / "plane", controller_manager=False) as plane:
        kubectl = kube.Kubectl(plane.kubeconfig)
        kube.install_crds(kubectl)
        kubectl("apply", "-f", str(kube.SAMPLES / "flavors.yaml"))
        kubectl("apply", "-f", str(kube.SAMPLES / "instance.yaml"))  # before the webhook
        installed = helm.Helm(plane.kubeconfig).install(
            {"crds.install": "false", "webhook.failurePolicy": "Fail"}
        )
        assert installed.ok, installed.stderr
        assert kubectl.run("label", "instance", "demo", "team=a").ok
        assert kubectl.run("annotate", "instance", "demo", "note=x").ok
        changed = kubectl.run(
            "patch", "instance", "demo", "--type=merge", "-p", '{"spec":{"flavor":"m1.small"}}'
        )
        assert not changed.ok
        assert 'failed calling webhook "validate-instance.compute.kubenova.io"' in changed.stderr
        # A return to the flavor that ran before is not sent: a revert needs no controller.
        snap = builders.snapshot("m1.small", 1, 2048, 20)
        previous = json.dumps({"status": {"previousFlavor": snap}})
        assert kubectl.run(
            "patch", "instance", "demo", "--subresource=status", "--type=merge", "-p", previous
        ).ok
        back = kubectl.run(
            "patch", "instance", "demo", "--type=merge", "-p", '{"spec":{"flavor":"m1.small"}}'
        )
        assert back.ok, back.stderr
