"""The chart's pods after everything before them (the walkthrough, the rollouts): what
`kubectl get pods -n kubenova-system` shows a user, the leader Lease, and the webhook
serving the certificate the chart generated."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests import builders, kube
from tests.kind import cluster

pytestmark = cluster.MARKS


def _restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses", []))


def test_pods_ready_one_leader_no_restarts(kubectl: kube.Kubectl) -> None:
    workers = sorted(
        n["metadata"]["name"]
        for n in kubectl.get_json("nodes")["items"]
        if "node-role.kubernetes.io/control-plane" not in n["metadata"]["labels"]
    )
    assert len(workers) == 2

    controllers = cluster.pods(kubectl, cluster.CONTROLLER)
    agents = cluster.pods(kubectl, cluster.AGENT)
    assert len(controllers) == 2
    assert sorted(p["spec"]["nodeName"] for p in agents) == workers  # one per worker
    for pod in controllers + agents:
        name = pod["metadata"]["name"]
        assert cluster.pod_ready(pod), f"{name} is not Ready: {pod['status']}"
        assert _restarts(pod) == 0, f"{name} restarted {_restarts(pod)} times"
    assert cluster.leader(kubectl) in {p["metadata"]["name"] for p in controllers}

    # Each worker is a Hypervisor its agent reports up, with the node's real capacity.
    hypervisors = {h["metadata"]["name"]: h for h in kubectl.get_json("hypervisors")["items"]}
    assert sorted(hypervisors) == workers
    for name in workers:
        assert hypervisors[name]["status"]["agent"]["capacity"]["vcpus"] >= 1, hypervisors[name]


def test_webhook_answers_with_the_chart_certificate(kubectl: kube.Kubectl) -> None:
    """The API server reaches the webhook through the chart's Service and trusts it with
    the CA the chart generated (the same CA is in the webhook configuration and the Secret)."""
    secret = kubectl.get_json("secret", "-n", cluster.NAMESPACE, "kubenova-webhook-tls")
    config = kubectl.get_json("validatingwebhookconfigurations", "kubenova-webhook")
    bundles = {w["clientConfig"]["caBundle"] for w in config["webhooks"]}
    assert bundles == {secret["data"]["ca.crt"]}
    assert base64.b64decode(secret["data"]["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")

    manifest = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "metadata": {"name": "webhook-probe", "namespace": "default"},
        "spec": {"flavor": "m9.huge", "image": "cirros"},
    }
    refused = kubectl.run("apply", "-f", "-", stdin=json.dumps(manifest))
    assert not refused.ok
    assert "m9.huge does not exist" in refused.stderr, refused.stderr


def test_an_agent_token_on_one_worker_cannot_touch_the_other(kubectl: kube.Kubectl) -> None:
    """A pod of the agent's ServiceAccount on worker 1, its own (node-bound) token, real
    admission: worker 2's Hypervisor and a Migration between other nodes are refused."""
    workers = sorted(p["spec"]["nodeName"] for p in cluster.pods(kubectl, cluster.AGENT))
    other = builders.migration(
        "between-others", namespace="default", sourceNode=workers[1], destNode=workers[1]
    )
    assert kubectl.apply(other).ok
    try:
        with cluster.agent_token_on(kubectl, workers[0]) as request:
            api = "/apis/compute.kubenova.io/v1alpha1"
            assert request("PATCH", f"{api}/hypervisors/{workers[0]}/status", {})[0] == 200
            code, text = request("PATCH", f"{api}/hypervisors/{workers[1]}/status", {})
            assert code == 403, text
            assert f"the kubenova agent on node {workers[0]} may write only" in text
            path = f"{api}/namespaces/default/migrations/between-others/status"
            code, text = request("PATCH", path, {})
            assert code == 403, text
            assert "migrations between-others does not" in text
    finally:
        kubectl.run("delete", "migration", "between-others", "--wait=false")


# Run inside worker 1's agent pod, with the agent's own code and the chart's CA: worker 2's
# transfer endpoint (over the pod network) verified as worker 2, refusing a request without
# a token, and refused under another name; then a source whose certificate another CA
# signed, refused by transfer.pull.
TLS_PROBE = """
import asyncio, pathlib, socket, ssl, sys, tempfile, datetime
import aiohttp
from aiohttp import web
from kubenova import pki
from kubenova.agent import certificate, transfer
endpoint, node, other = sys.argv[1:4]
verify = certificate.client_context("/etc/kubenova/transfer-ca/ca.crt")
host, port = endpoint.removeprefix("https://").rsplit(":", 1)
def handshake(name):
    with socket.create_connection((host, int(port)), 10) as raw:
        with verify.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert()["subjectAltName"]
print("verified", handshake(node))
async def no_token():
    async with aiohttp.ClientSession() as session:
        async with session.get(endpoint + "/v1/migrations/default/any/disk", ssl=verify,
                               server_hostname=node) as answer:
            return answer.status
print("no-token", asyncio.run(no_token()))
try:
    handshake(other)
    print("accepted-under", other)
except ssl.SSLCertVerificationError:
    print("refused-under", other)
async def rogue():
    work = pathlib.Path(tempfile.mkdtemp())
    ca = pki.Authority.create(work, "rogue-ca")
    key, request = pki.transfer_request(node)
    hour = datetime.timedelta(hours=1)
    (work / "s.crt").write_bytes(pki.sign_request(ca.cert, ca.key, request, hour))
    (work / "s.key").write_bytes(key)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(work / "s.crt", work / "s.key")
    runner = web.AppRunner(web.Application())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}/v1/migrations/default/x/disk"
    try:
        await transfer.pull(url, "token", work / "disk", tls=verify, node=node)
        print("rogue-accepted")
    except transfer.TransferError as exc:
        print("rogue-refused", exc.transient, exc)
asyncio.run(rogue())
"""


def test_disks_move_over_tls_verified_by_the_charts_ca(kubectl: kube.Kubectl) -> None:
    """Each agent serves its transfer endpoint with a certificate for its node, signed by
    the controller for the agent's node-bound token; a destination verifies it against the
    chart's CA under the source's node name, and refuses one another CA signed; a source
    answers nothing to a request without a token."""
    workers = sorted(p["spec"]["nodeName"] for p in cluster.pods(kubectl, cluster.AGENT))
    endpoints = {
        h["metadata"]["name"]: h["status"]["agent"]["transferEndpoint"]
        for h in kubectl.get_json("hypervisors")["items"]
    }
    assert all(endpoints[w].startswith("https://") for w in workers), endpoints
    signed = {
        c["spec"]["extra"]["authentication.kubernetes.io/node-name"][0]
        for c in kubectl.get_json("csr")["items"]
        if c["spec"]["signerName"] == "compute.kubenova.io/transfer"
        and c["spec"]["username"] == f"system:serviceaccount:{cluster.NAMESPACE}:kubenova-agent"
        and c.get("status", {}).get("certificate")
    }
    assert signed == set(workers)

    out = kubectl(
        "exec", "-n", cluster.NAMESPACE, cluster.agent_pod(kubectl, workers[0]), "--",
        "python", "-c", TLS_PROBE, endpoints[workers[1]], workers[1], workers[0],
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == f"verified (('DNS', '{workers[1]}'),)", out
    assert lines[1] == "no-token 401", out  # over TLS, over the pod network
    assert lines[2] == f"refused-under {workers[0]}", out
    assert lines[3].startswith("rogue-refused False source's certificate refused"), out
