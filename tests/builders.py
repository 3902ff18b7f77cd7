"""Builders for kubenova manifests, with valid defaults a test overrides field by field."""

from __future__ import annotations

from typing import Any

from kubenova.api import names


def flavor(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": "Flavor",
        "metadata": {"name": name},
        "spec": {"vcpus": 1, "memoryMiB": 256, "diskGiB": 1, **spec},
    }


def instance(name: str, *, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": "Instance",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"flavor": "m1.tiny", "image": "cirros", **spec},
    }


def snapshot(
    name: str = "m1.tiny", vcpus: int = 1, memory_mib: int = 512, disk_gib: int = 1
) -> dict[str, Any]:
    return {"name": name, "vcpus": vcpus, "memoryMiB": memory_mib, "diskGiB": disk_gib}


def migration(name: str, *, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": "Migration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "instanceName": "demo",
            "instanceUuid": "7d8a1c5e-0000-4000-8000-000000000001",
            "type": "resize",
            "sourceNode": "node-a",
            "destNode": "node-a",
            "oldFlavor": snapshot(),
            "newFlavor": snapshot("m1.small", 1, 2048, 20),
            **spec,
        },
    }


def hypervisor(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": "Hypervisor",
        "metadata": {"name": name},
        "spec": spec,
    }


def condition(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "reason": "Running",
        "message": "",
        "lastTransitionTime": "2026-11-27T12:00:00Z",
        **overrides,
    }
