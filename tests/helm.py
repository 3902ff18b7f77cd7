"""Helm as a user runs it, against a real API server: the chart under charts/kubenova.

helm comes from hack/install-helm.sh (built once into ~/.cache/kubenova; `make test` runs
it first), or from $HELM.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import os
import pathlib
import re
import subprocess
from typing import Any

import yaml

from tests import kube

CHART = kube.REPO / "charts" / "kubenova"
NAMESPACE = "kubenova-system"
RELEASE = "kubenova"


@functools.cache
def binary() -> str:
    if os.environ.get("HELM"):
        return os.environ["HELM"]
    out = subprocess.run(
        ["bash", str(kube.REPO / "hack" / "install-helm.sh")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


def sets(values: dict[str, str]) -> list[str]:
    """--set arguments, written as a user must: fractions through --set-json (--set reads
    1.5 as a string, which the schema refuses), commas escaped except in {a,b} lists."""
    args = []
    for key, value in values.items():
        if re.fullmatch(r"-?[0-9]+\.[0-9]+", value):
            args += ["--set-json", f"{key}={value}"]
        elif value.startswith("{"):
            args += ["--set", f"{key}={value}"]
        else:
            args += ["--set", key + "=" + value.replace(",", "\\,")]
    return args


@dataclasses.dataclass(frozen=True)
class Helm:
    kubeconfig: pathlib.Path | None = None

    def run(self, *args: str, timeout: float = 120) -> kube.Result:
        config = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        proc = subprocess.run(
            [binary(), *args, *config],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            # No user helm configuration or caches leak into the tests.
            env={**os.environ, "HELM_CACHE_HOME": "/tmp/kubenova-helm/cache"},
        )
        return kube.Result(proc.returncode, proc.stdout, proc.stderr)

    def template(self, values: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """The chart's objects, rendered as `helm template` renders them."""
        result = self.run("template", RELEASE, str(CHART), "-n", NAMESPACE, *sets(values or {}))
        assert result.ok, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def install(self, values: dict[str, str] | None = None, *extra: str) -> kube.Result:
        """helm upgrade --install: install the first time, upgrade afterwards."""
        return self.run(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "-n",
            NAMESPACE,
            "--create-namespace",
            *sets(values or {}),
            *extra,
        )


def service_account_kubeconfig(
    kubectl: kube.Kubectl, service_account: str, path: pathlib.Path, *, node: str | None = None
) -> pathlib.Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (a TokenRequest token),
    so a process runs with exactly the chart's RBAC. `node`: the token is bound to a pod on
    that node, as a DaemonSet pod's own token is (the chart's node policy needs it)."""
    bound = (
        ["--bound-object-kind=Pod", f"--bound-object-name={pod_on(kubectl, node)}"] if node else []
    )
    token = kubectl(
        "create", "token", service_account, "-n", NAMESPACE, "--duration=1h", *bound
    ).strip()
    config = yaml.safe_load(kubectl.kubeconfig.read_text())
    config["users"] = [{"name": service_account, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = service_account
    path.write_text(yaml.safe_dump(config))
    return path


def pod_on(kubectl: kube.Kubectl, node: str, service_account: str = "kubenova-agent") -> str:
    """A pod of `service_account` bound to `node` (a Node object is made if there is none),
    for node-bound tokens on an API server without kubelets: it never runs, and tolerates
    every taint so the node lifecycle controller never evicts it (which would void them)."""
    node_manifest = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}}
    if not kubectl.run("get", "node", node).ok:
        assert kubectl.apply(node_manifest).ok
    name = f"{service_account}-{node}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "nodeName": node,
            "serviceAccountName": service_account,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "placeholder", "image": "kubenova/agent:never-runs"}],
        },
    }
    if not kubectl.run("get", "pod", "-n", NAMESPACE, name).ok:
        created = kubectl.apply(pod)
        assert created.ok, created.stderr
    return name


def secret_data(kubectl: kube.Kubectl, name: str) -> dict[str, bytes]:
    secret = kubectl.get_json("secret", name, "-n", NAMESPACE)
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}
