"""The KubeVirt VirtualMachine of a guest: a pure manifest from what the driver decided
(docs/kubevirt.md), as domain.py is for libvirt.

One VM per Instance, with its name, in its namespace, owned by it; pinned to one node; its
root disk the raw file the node's agent keeps (hostDisk `type: Disk`: KubeVirt never makes,
truncates or deletes it). The template changes only while the VM is stopped (every resize
is cold), so the spec here is the whole truth of the next boot.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any

from kubenova.scheduling.amounts import Overhead

API_VERSION = "kubevirt.io/v1"
INSTANCE_LABEL = "compute.kubenova.io/instance"  # the instance uuid: what the agent looks up
HOSTNAME = "kubernetes.io/hostname"
ROOT = "root"  # the disk's and the volume's name: /dev/vda in the guest (virtio)
# What KubeVirt v1.7.0 has Kubernetes reserve for a VM made here beside the guest's memory
# (virt-controller's GetMemoryOverhead, renderresources.go; docs/kubevirt.md): the
# launcher's processes (virt-launcher-monitor 25, virt-launcher 100, virtlogd 25, virtqemud
# 40, QEMU 30 MiB), the static IOThread (8) and the auto-attached video RAM (32), 8 MiB per
# vCPU, the page tables (1/512 of the memory the VM requests: 2 MiB per GiB), and two small
# containers of the launcher pod: guest-console-log (35 MB) and the kernel-boot volume's.
LAUNCHER_MIB = 25 + 100 + 25 + 40 + 30 + 8 + 32
SIDECARS_MIB = math.ceil((35_000_000 + 1_000_000) / 2**20)
LAUNCHER_OVERHEAD = Overhead(
    memory_mib=LAUNCHER_MIB + SIDECARS_MIB, memory_mib_per_vcpu=8, memory_mib_per_gib=2
)
# What the test guest's kernel is told (its console is the VMI's serial console log).
KERNEL_ARGS = "console=ttyS0 quiet panic=-1"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Boot:
    """A kernel from a container image (kernelBoot.container), or None: boot the disk."""

    image: str
    kernel: str = "/boot/vmlinuz"
    initrd: str = "/boot/initrd.img"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Definition:
    name: str
    namespace: str
    owner_uid: str  # the Instance's metadata.uid: the VM goes with it
    instance_uuid: str
    node: str
    vcpus: int
    memory_mib: int
    disk: pathlib.Path  # on the node, as the launcher's hostPath sees it
    running: bool
    grace_seconds: int  # ACPI first, then forced: the Instance's shutdownTimeoutSeconds
    boot: Boot | None = None


def manifest(d: Definition) -> dict[str, Any]:
    memory = f"{d.memory_mib}Mi"
    devices: dict[str, Any] = {
        "autoattachPodInterface": False,  # networking is not kubenova's (yet)
        "disks": [{"name": ROOT, "bootOrder": 1, "disk": {"bus": "virtio"}}],
    }
    domain: dict[str, Any] = {
        "cpu": {"sockets": d.vcpus, "cores": 1, "threads": 1},
        "memory": {"guest": memory},
        "resources": {"requests": {"memory": memory}},
        "devices": devices,
    }
    # The guest's SMBIOS UUID is the instance uuid, as the libvirt driver's domain UUID: the
    # same machine to the guest when its VM is made again (a move hands it to another node).
    firmware: dict[str, Any] = {"uuid": d.instance_uuid}
    domain["firmware"] = firmware
    if d.boot is not None:
        container = {
            "image": d.boot.image,
            "imagePullPolicy": "IfNotPresent",
            "kernelPath": d.boot.kernel,
            "initrdPath": d.boot.initrd,
        }
        firmware["kernelBoot"] = {"kernelArgs": KERNEL_ARGS, "container": container}
    labels = {INSTANCE_LABEL: d.instance_uuid}
    template = {
        "metadata": {"labels": labels},
        "spec": {
            "nodeSelector": {HOSTNAME: d.node},
            "terminationGracePeriodSeconds": d.grace_seconds,
            "domain": domain,
            "volumes": [{"name": ROOT, "hostDisk": {"path": str(d.disk), "type": "Disk"}}],
        },
    }
    owner = {
        "apiVersion": "compute.kubenova.io/v1alpha1",
        "kind": "Instance",
        "name": d.name,
        "uid": d.owner_uid,
        "controller": True,
        "blockOwnerDeletion": False,  # the agent removes the files, not the garbage collector
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualMachine",
        "metadata": {
            "name": d.name,
            "namespace": d.namespace,
            "labels": labels,
            "ownerReferences": [owner],
        },
        "spec": {"runStrategy": "Always" if d.running else "Halted", "template": template},
    }


def replacing(current: dict[str, Any], made: dict[str, Any]) -> dict[str, Any]:
    """`made` as the body of a replace of `current`: kubenova's spec, labels and owner, with
    what others keep on the VM's metadata (KubeVirt's finalizer and annotations, other
    labels) and the resourceVersion it was read at. A replace that dropped the finalizer
    would race virt-controller, which adds it back."""
    ours = made["metadata"]
    metadata = {**current["metadata"], "ownerReferences": ours["ownerReferences"]}
    metadata["labels"] = {**current["metadata"].get("labels", {}), **ours["labels"]}
    return {**made, "metadata": metadata}


def sizes(vmi: dict[str, Any]) -> tuple[int, int] | None:
    """(vCPUs, memory MiB) a running VMI reports, or None while it has not said."""
    status = vmi.get("status", {})
    topology = status.get("currentCPUTopology")
    current = status.get("memory", {}).get("guestCurrent")
    if not topology or not current:
        return None
    vcpus = topology.get("sockets", 1) * topology.get("cores", 1) * topology.get("threads", 1)
    return vcpus, mebibytes(current)


UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}


def mebibytes(quantity: str) -> int:
    """A Kubernetes binary quantity (`512Mi`, `1Gi`, bytes) in MiB, rounded down."""
    for suffix, factor in UNITS.items():
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    if quantity.isdigit():
        return int(quantity) // (1024 * 1024)
    raise ValueError(f"not a binary quantity: {quantity!r}")
