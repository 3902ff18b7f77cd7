"""TLS for the disk transfer, with the chart's CA and a real API server: an agent with a
token bound to its node gets a serving certificate for that node from the controller's
signer and serves HTTPS with it, verified against the chart's CA under its node name; every
other request (another node's name, a token bound to no node, a person) is denied, with
the reason on the request, and never signed."""

from __future__ import annotations

import base64
import pathlib
import socket
import ssl
import urllib.parse
from collections.abc import Iterator

import pytest
from hack import controlplane

from kubenova import pki
from tests import env as kubenova_env
from tests import helm
from tests.integration.test_node_policy import Client

pytestmark = [pytest.mark.controlplane, pytest.mark.xdist_group(__name__)]

NS = helm.NAMESPACE
AGENT = f"system:serviceaccount:{NS}:kubenova-agent"
CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kubenova_env.Env]:
    """The chart (its CA, RBAC and node policy), the controller as the chart's
    ServiceAccount with the CA's key, and node-a's agent with a token bound to node-a."""
    directory = tmp_path_factory.mktemp("transfer-tls")
    with kubenova_env.running(directory) as e:
        values = {"webhook.enabled": "false", "crds.install": "false"}
        installed = helm.Helm(e.plane.kubeconfig).install(values)
        assert installed.ok, installed.stderr
        ca_dir = directory / "transfer-ca"
        ca_dir.mkdir()
        for name, data in helm.secret_data(e.kubectl, "kubenova-transfer-ca").items():
            (ca_dir / name).write_bytes(data)
        ca = e.kubectl.get_json("configmap", "kubenova-transfer-ca", "-n", NS)["data"]["ca.crt"]
        (directory / "ca.crt").write_text(ca)
        as_controller = helm.service_account_kubeconfig(
            e.kubectl, "kubenova-controller", directory / "controller.kubeconfig"
        )
        e.start_controller(
            webhook=False,
            environ={
                "KUBECONFIG": str(as_controller),
                "POD_NAMESPACE": NS,
                "KUBENOVA_TRANSFER_CA_DIR": str(ca_dir),
                "KUBENOVA_TRANSFER_AGENTS": AGENT,
            },
        )
        as_agent = helm.service_account_kubeconfig(
            e.kubectl, "kubenova-agent", directory / "agent.kubeconfig", node="node-a"
        )
        e.start_agent(
            "node-a",
            "vcpus=8,memoryMiB=16384,diskGiB=200",
            f"--transfer-port={controlplane.free_port()}",
            f"--transfer-ca-file={directory / 'ca.crt'}",
            environ={"KUBECONFIG": str(as_agent), "POD_NAMESPACE": NS},
        )
        yield e


def ca_file(env: kubenova_env.Env) -> pathlib.Path:
    return env.dir / "ca.crt"


def handshake(env: kubenova_env.Env, name: str) -> dict[str, object]:
    """TLS to node-a's transfer endpoint, verifying its certificate as issued for `name`."""
    endpoint = env.wait_for(
        lambda: env.hypervisor("node-a")["status"]["agent"].get("transferEndpoint"),
        what="node-a's transfer endpoint",
    )
    url = urllib.parse.urlsplit(endpoint)
    assert url.scheme == "https"
    context = ssl.create_default_context(cafile=str(ca_file(env)))

    def connect() -> dict[str, object]:
        with (
            socket.create_connection((url.hostname, url.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            return tls.getpeercert()  # type: ignore[return-value]

    env.wait_for(
        lambda: _serving(url.hostname or "", url.port or 0), what="node-a serving over TLS"
    )
    return connect()


def _serving(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_an_agent_serves_with_a_certificate_for_its_own_node(env: kubenova_env.Env) -> None:
    cert = handshake(env, "node-a")
    assert cert["subjectAltName"] == (("DNS", "node-a"),)
    [csr] = [
        c
        for c in env.kubectl.get_json("csr")["items"]
        if c["spec"]["signerName"] == "compute.kubenova.io/transfer"
        and c["spec"]["username"] == AGENT
        and c["status"].get("certificate")
    ]
    [approved] = [c for c in csr["status"]["conditions"] if c["type"] == "Approved"]
    assert approved["reason"] == "AgentOfNode"


def test_its_certificate_is_worth_nothing_under_another_nodes_name(
    env: kubenova_env.Env,
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="node-b"):
        handshake(env, "node-b")


def manifest(name: str, node: str) -> dict[str, object]:
    """A request for a transfer certificate for `node`, as an agent makes it."""
    _, request = pki.transfer_request(node)
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64.b64encode(request).decode(),
            "signerName": "compute.kubenova.io/transfer",
            "usages": ["digital signature", "server auth"],
        },
    }


def token(env: kubenova_env.Env, node: str | None) -> str:
    """The agent ServiceAccount's token, bound to a pod on `node` (None: to nothing)."""
    bound = (
        ["--bound-object-kind=Pod", f"--bound-object-name={helm.pod_on(env.kubectl, node)}"]
        if node
        else []
    )
    return env.kubectl("create", "token", "kubenova-agent", "-n", NS, "--duration=1h", *bound)


@pytest.mark.parametrize(
    ("who", "node", "reason"),
    [
        ("node-a", "node-b", "WrongSubject"),  # an agent asking for another node's name
        (None, "node-a", "NotNodeBound"),  # the agent's ServiceAccount, no pod's token
        ("admin", "node-a", "NotAnAgent"),  # a person (the cluster admin)
    ],
    ids=["another-node", "unbound-token", "admin"],
)
def test_every_other_request_is_denied_with_the_reason(
    env: kubenova_env.Env, who: str | None, node: str, reason: str
) -> None:
    name = f"probe-{who or 'unbound'}-{node}"
    if who == "admin":
        assert env.kubectl.apply(manifest(name, node)).ok
    else:
        client = Client(env.kubectl, token(env, who).strip())
        status, text = client.send("POST", CSRS, manifest(name, node))
        assert status == 201, text

    def decided() -> dict[str, object] | None:
        body = env.kubectl.get_json("csr", name)
        return body if body.get("status", {}).get("conditions") else None

    csr = env.wait_for(decided, what=f"a decision on {name}")
    [condition] = csr["status"]["conditions"]
    assert (condition["type"], condition["reason"]) == ("Denied", reason), condition
    assert condition["message"]
    assert "certificate" not in csr["status"]


def test_a_controller_that_cannot_read_the_ca_stops_at_start(env: kubenova_env.Env) -> None:
    """Not a controller that leads and signs nothing: the agents would wait for ever."""
    missing = env.dir / "no-such-ca"
    bad = env.start_controller(
        webhook=False, name="no-ca", environ={"KUBENOVA_TRANSFER_CA_DIR": str(missing)}
    )
    assert bad.wait_exit(60) != 0
    assert f"{missing}/tls.crt" in bad.tail(40)


def test_a_request_someone_else_approved_is_still_reviewed_and_never_signed(
    env: kubenova_env.Env,
) -> None:
    """The node rule is the signer's: an admin's `kubectl certificate approve` of a request
    for another node's name (made while the controller was away) ends Failed, unsigned."""
    assert env.controller is not None
    env.controller.stop()
    name = "approved-by-admin"
    client = Client(env.kubectl, token(env, "node-a").strip())
    status, text = client.send("POST", CSRS, manifest(name, "node-b"))
    assert status == 201, text
    env.kubectl("certificate", "approve", name)
    env.controller.start()

    def decided() -> dict[str, object] | None:
        body = env.kubectl.get_json("csr", name)
        types = [c["type"] for c in body.get("status", {}).get("conditions", [])]
        return body if "Failed" in types else None

    csr = env.wait_for(decided, what=f"{name} failed")
    assert [c["type"] for c in csr["status"]["conditions"]] == ["Approved", "Failed"]
    assert csr["status"]["conditions"][1]["reason"] == "WrongSubject"
    assert "certificate" not in csr["status"]
