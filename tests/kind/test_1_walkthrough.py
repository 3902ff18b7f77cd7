"""The README walkthrough, verbatim, against the kind cluster and the chart's pods: real
TCG guests on the kind workers, whose own serial consoles report the sizes and the image's
marker after a resize, a revert and a cross-node cold migrate. (Modules are numbered: they
share one cluster and run in this order.)"""

from __future__ import annotations

import os
import subprocess

from tests import kube
from tests.e2e import guest
from tests.integration.test_make_up import walkthrough
from tests.kind import cluster

pytestmark = cluster.MARKS
DEMO_MARKER = "kubenova-demo-disk"  # the first bytes of the image `cirros` (hack/devenv.py)


def test_readme_walkthrough_on_kind(kubectl: kube.Kubectl) -> None:
    lines = walkthrough().splitlines()
    # The one line that points kubectl at `make up`'s control plane; KUBECONFIG is the
    # kind cluster's instead. Everything else runs as written.
    exports = [line for line in lines if line.startswith("export KUBECONFIG=")]
    assert len(exports) == 1, exports
    script = "\n".join(line for line in lines if line not in exports)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["KUBECONFIG"] = str(kubectl.kubeconfig)
    walk = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=kube.REPO, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    try:
        assert walk.returncode == 0, f"{walk.stdout}\n{walk.stderr}"
        assert "confirmed" in walk.stdout
        assert "reverted" in walk.stdout

        demo = cluster.instance(kubectl, "demo")
        assert (demo["spec"]["flavor"], demo["status"]["phase"]) == ("m1.small", "ACTIVE")
        node = demo["status"]["node"]
        assert node.startswith(f"{os.environ.get('KUBENOVA_KIND_CLUSTER', 'kubenova')}-worker")
        migrations = kubectl.get_json("migrations", "-l", "compute.kubenova.io/instance=demo")
        moves = [m for m in migrations["items"] if m["spec"]["type"] == "migration"]
        assert moves
        assert moves[-1]["spec"]["destNode"] == node
        assert moves[-1]["spec"]["sourceNode"] != node, "the cold migrate stayed on its node"

        resizes = sorted(
            (m for m in migrations["items"] if m["spec"]["type"] == "resize"),
            key=lambda m: m["metadata"]["creationTimestamp"],
        )
        # m1.small only grows and fits the guest's headroom: live; m1.medium's 4 GiB is
        # beyond it (4x m1.tiny's 512 MiB): cold.
        assert [m["spec"]["mode"] for m in resizes] == ["live", "cold"], resizes

        # The guest on the node it now runs on: m1.small (1 vCPU, 20 GiB disk) and the
        # image's marker. Its boot counter, kept on its own disk: 1 at the first boot and
        # still 1 after the live resize to m1.small, 2 on the m1.medium copy, which the
        # revert dropped: the original counted 1 and booted to 2 again, and the migrated
        # copy of that boots to 3.
        report = cluster.last_report(kubectl, node, demo["status"]["uuid"], boots=3)
        assert report.cpus == 1
        assert report.disk_sectors == 20 * guest.SECTORS_PER_GIB
        assert report.marker == DEMO_MARKER
        assert report.boots == 3, report
    finally:
        kubectl.run("delete", "instance", "demo", "--wait=true", timeout=300)
