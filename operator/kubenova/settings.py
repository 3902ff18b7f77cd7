"""Settings: the only reader of the environment. One frozen object per process.

Every setting has an environment variable (what the Helm chart sets) and, for the
`kubenova` command, a flag that overrides it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping

from kubenova.scheduling.amounts import Amount


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return float(env.get(name, default))


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    return env.get(name, str(default)).lower() in ("1", "true", "yes", "on")


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def parse_capacity(text: str) -> Amount:
    """`vcpus=8,memoryMiB=16384,diskGiB=200` -> Amount."""
    fields = dict(part.split("=", 1) for part in text.split(",") if part)
    unknown = set(fields) - {"vcpus", "memoryMiB", "diskGiB"}
    if unknown:
        raise ValueError(
            f"unknown capacity fields {sorted(unknown)}: use vcpus, memoryMiB, diskGiB"
        )
    return Amount(
        int(fields.get("vcpus", 0)), int(fields.get("memoryMiB", 0)), int(fields.get("diskGiB", 0))
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Common:
    kubeconfig: str | None = None  # None: in-cluster service account
    log_level: str = "INFO"
    log_format: str = "text"  # text (people) or json (log collectors)
    # /metrics, /healthz and /readyz on one port (0: none), on every interface: Prometheus
    # and the kubelet reach the pod at its IP.
    metrics_port: int = 0
    # "<component>:<point>" names a step boundary where the process SIGKILLs itself
    # (crash-recovery tests); empty in production.
    fault: str = ""
    # Tests only: this process's wall clock runs this far off the system's (kubenova.clock).
    clock_skew_seconds: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Controller(Common):
    resize_confirm_window_seconds: float = 0.0
    allow_resize_to_same_host: bool = True
    # false: every resize is cold (spec.resizePolicy Live refused), as in Nova.
    live_resize: bool = True
    # A cross-node move of a running guest sends its disk while it runs; only what it wrote
    # since goes after power-off (false: all of it after power-off, as Nova does).
    pre_copy: bool = True
    service_down_time_seconds: float = 60.0  # Nova's service_down_time
    weigher: str = "spread"
    retry_base_seconds: float = 5.0
    retry_cap_seconds: float = 300.0
    webhook_host: str = "127.0.0.1"  # the name or IP the API server calls
    webhook_bind: str = ""  # the address to listen on; empty: webhook_host
    webhook_port: int = 0  # 0: no webhook server
    webhook_cert_dir: str = ""
    # True: generate a CA and serving certificate in webhook_cert_dir and register the
    # ValidatingWebhookConfiguration ourselves (make up, tests). False (the Helm chart):
    # serve tls.crt/tls.key from webhook_cert_dir (a mounted Secret) and leave the
    # configuration to the chart, so the controller needs no RBAC on webhook configurations.
    webhook_managed: bool = True
    # Reconciles in flight. 32 measured no faster than 8 under 250 concurrent resizes: the
    # API server and the webhook were the limit, and more requests in flight slowed both.
    workers: int = 8
    # Leader election on a Lease: replicas keep warm caches, the holder acts.
    leader_election: bool = True
    lease_namespace: str = "default"
    lease_name: str = "kubenova-controller"
    lease_duration_seconds: float = 15.0  # kube-controller-manager's default
    identity: str = dataclasses.field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}"
    )
    # The agents' transfer certificates: the CA (tls.crt, tls.key) the leader signs them
    # with; empty: no signer. Only requests from these usernames (the agent ServiceAccount)
    # with a token bound to the node they name are signed, for at most this long.
    transfer_ca_dir: str = ""
    transfer_agents: tuple[str, ...] = ()
    transfer_cert_max_seconds: float = 30 * 24 * 3600.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Agent(Common):
    node: str
    driver: str = "fake"
    capacity: Amount = dataclasses.field(default_factory=lambda: Amount(16, 65536, 1000))
    cpu_allocation_ratio: float = 4.0
    memory_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    heartbeat_interval_seconds: float = 10.0  # the node's Lease (the kubelet's default)
    # The Hypervisor's status.agent is written when it changes and at least this often
    # (the kubelet's nodeStatusReportFrequency): heartbeats go to the Lease.
    status_report_seconds: float = 300.0
    # Where the node Leases live: the release namespace (the controller watches them there).
    heartbeat_namespace: str = "default"
    shutdown_timeout_seconds: float = 60.0  # Nova's shutdown_timeout
    # Power drift is seen within this long: every selected instance is reconciled again.
    resync_seconds: float = 30.0
    orphan_sweep_seconds: float = 60.0  # Nova's running_deleted_instance_poll_interval
    # A guest is quarantined only if its Instance was absent on sweeps this far apart.
    orphan_grace_seconds: float = 300.0
    quarantine_keep_seconds: float = 7 * 24 * 3600.0  # a week to notice and restore by hand
    # A disk transfer cut by a passing fault is resumed for this long, then the migration fails.
    transfer_retry_seconds: float = 600.0
    fake_latency_seconds: float = 0.0
    fake_state_file: str = ""
    fake_fail: str = ""  # comma-separated driver methods that fail (failure-path tests)
    instances_path: str = "/var/lib/kubenova/instances"
    # Images named without a path (`spec.image: cirros`) are looked up here, like Nova's
    # cache of Glance images (`_base`).
    images_path: str = "/var/lib/kubenova/images"
    libvirt_uri: str = "qemu:///system"
    virt_type: str = "kvm"
    hotplug_ratio: float = 4.0  # libvirt guests' hot-plug headroom, times the flavor
    libvirt_domain_prefix: str = ""  # several agents on one libvirtd (simulated nodes)
    transfer_port: int = 0  # 0: serve no disks (fake driver, or a node that is never a source)
    transfer_host: str = "127.0.0.1"  # the address other agents reach this one at
    # The key every agent derives migrations' transfer tokens from (a file: the chart mounts
    # it from a Secret). Needed on both ends of a cross-node move that carries a disk.
    transfer_key_file: str = ""
    # TLS for the transfer: the CA that signs every agent's serving certificate. Set, the
    # agent serves disks over HTTPS with a certificate for its node from the controller's
    # signer (a CertificateSigningRequest), and pulls only from sources whose certificate
    # this CA signed for the source's node name.
    transfer_ca_file: str = ""
    transfer_cert_seconds: float = 7 * 24 * 3600.0  # asked for; renewed at two thirds
    workers: int = 4
    # Scale benchmarks: one process simulates `node_count` nodes named `<node>NNNN`, each
    # with its own fake hypervisor and its own label-selected watches. 0: one node, `node`.
    node_count: int = 0
    stats_file: str = ""  # where the agent writes watch events received per node (JSON)


def common_from_env(env: Mapping[str, str] | None = None) -> dict[str, object]:
    env = os.environ if env is None else env
    return {
        "kubeconfig": env.get("KUBECONFIG") or None,
        "log_level": env.get("KUBENOVA_LOG_LEVEL", "INFO"),
        "log_format": env.get("KUBENOVA_LOG_FORMAT", "text"),
        "metrics_port": int(env.get("KUBENOVA_METRICS_PORT", 0)),
        "fault": env.get("KUBENOVA_FAULT", ""),
        "clock_skew_seconds": _float(env, "KUBENOVA_CLOCK_SKEW_SECONDS", 0.0),
    }


def controller_from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Controller:
    env = os.environ if env is None else env
    values: dict[str, object] = {
        **common_from_env(env),
        "resize_confirm_window_seconds": _float(env, "KUBENOVA_RESIZE_CONFIRM_WINDOW_SECONDS", 0.0),
        "allow_resize_to_same_host": _bool(env, "KUBENOVA_ALLOW_RESIZE_TO_SAME_HOST", True),
        "live_resize": _bool(env, "KUBENOVA_LIVE_RESIZE", True),
        "pre_copy": _bool(env, "KUBENOVA_PRE_COPY", True),
        "service_down_time_seconds": _float(env, "KUBENOVA_SERVICE_DOWN_TIME_SECONDS", 60.0),
        "weigher": env.get("KUBENOVA_WEIGHER", "spread"),
        "retry_base_seconds": _float(env, "KUBENOVA_RETRY_BASE_SECONDS", 5.0),
        "retry_cap_seconds": _float(env, "KUBENOVA_RETRY_CAP_SECONDS", 300.0),
        "webhook_host": env.get("KUBENOVA_WEBHOOK_HOST", "127.0.0.1"),
        "webhook_port": int(env.get("KUBENOVA_WEBHOOK_PORT", 0)),
        "webhook_bind": env.get("KUBENOVA_WEBHOOK_BIND", ""),
        "webhook_cert_dir": env.get("KUBENOVA_WEBHOOK_CERT_DIR", ""),
        "webhook_managed": _bool(env, "KUBENOVA_WEBHOOK_MANAGED", True),
        "workers": int(env.get("KUBENOVA_WORKERS", 8)),
        "leader_election": _bool(env, "KUBENOVA_LEADER_ELECTION", True),
        "lease_namespace": env.get("POD_NAMESPACE", "default"),
        "lease_duration_seconds": _float(env, "KUBENOVA_LEASE_DURATION_SECONDS", 15.0),
        "transfer_ca_dir": env.get("KUBENOVA_TRANSFER_CA_DIR", ""),
        "transfer_agents": _names(env.get("KUBENOVA_TRANSFER_AGENTS", "")),
        "transfer_cert_max_seconds": _float(env, "KUBENOVA_TRANSFER_CERT_MAX_SECONDS", 2592000.0),
    }
    if env.get("POD_NAME"):  # in a pod: the pod name says which replica leads
        values["identity"] = env["POD_NAME"]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Controller(**values)  # type: ignore[arg-type]


def agent_from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Agent:
    env = os.environ if env is None else env
    values: dict[str, object] = {
        **common_from_env(env),
        "node": env.get("NODE_NAME", ""),
        "driver": env.get("KUBENOVA_DRIVER", "fake"),
        "heartbeat_interval_seconds": _float(env, "KUBENOVA_HEARTBEAT_INTERVAL_SECONDS", 10.0),
        "status_report_seconds": _float(env, "KUBENOVA_STATUS_REPORT_SECONDS", 300.0),
        "heartbeat_namespace": env.get("POD_NAMESPACE", "default"),
        "shutdown_timeout_seconds": _float(env, "KUBENOVA_SHUTDOWN_TIMEOUT_SECONDS", 60.0),
        "resync_seconds": _float(env, "KUBENOVA_RESYNC_SECONDS", 30.0),
        "orphan_sweep_seconds": _float(env, "KUBENOVA_ORPHAN_SWEEP_SECONDS", 60.0),
        "orphan_grace_seconds": _float(env, "KUBENOVA_ORPHAN_GRACE_SECONDS", 300.0),
        "quarantine_keep_seconds": _float(env, "KUBENOVA_QUARANTINE_KEEP_SECONDS", 604800.0),
        "transfer_retry_seconds": _float(env, "KUBENOVA_TRANSFER_RETRY_SECONDS", 600.0),
        "cpu_allocation_ratio": _float(env, "KUBENOVA_CPU_ALLOCATION_RATIO", 4.0),
        "memory_allocation_ratio": _float(env, "KUBENOVA_MEMORY_ALLOCATION_RATIO", 1.0),
        "disk_allocation_ratio": _float(env, "KUBENOVA_DISK_ALLOCATION_RATIO", 1.0),
        "instances_path": env.get("KUBENOVA_INSTANCES_PATH", "/var/lib/kubenova/instances"),
        "images_path": env.get("KUBENOVA_IMAGES_PATH", "/var/lib/kubenova/images"),
        "libvirt_uri": env.get("KUBENOVA_LIBVIRT_URI", "qemu:///system"),
        "virt_type": env.get("KUBENOVA_VIRT_TYPE", "kvm"),
        "hotplug_ratio": _float(env, "KUBENOVA_HOTPLUG_RATIO", 4.0),
        "transfer_port": int(env.get("KUBENOVA_TRANSFER_PORT", 0)),
        "transfer_host": env.get("POD_IP", "127.0.0.1"),
        "transfer_key_file": env.get("KUBENOVA_TRANSFER_KEY_FILE", ""),
        "transfer_ca_file": env.get("KUBENOVA_TRANSFER_CA_FILE", ""),
        "transfer_cert_seconds": _float(env, "KUBENOVA_TRANSFER_CERT_SECONDS", 604800.0),
        "fake_latency_seconds": _float(env, "KUBENOVA_FAKE_LATENCY_SECONDS", 0.0),
        "workers": int(env.get("KUBENOVA_WORKERS", 4)),
    }
    if env.get("KUBENOVA_CAPACITY"):
        values["capacity"] = parse_capacity(env["KUBENOVA_CAPACITY"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if not values["node"]:
        raise ValueError("the agent needs its node name: --node or NODE_NAME")
    return Agent(**values)  # type: ignore[arg-type]
