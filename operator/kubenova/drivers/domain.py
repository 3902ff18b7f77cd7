"""The libvirt domain definition of a guest: pure text from what the driver decided.

The same uuid gives the same MAC, so a guest keeps its address across resize and
migration; the disk path and the console log come from the instance's layout.

Hot-plug headroom (a live resize grows into it without a reboot): vCPUs up to
`max_vcpus` (`<vcpu current=...>`), memory up to `max_memory_mib` through one virtio-mem
device on the guest's single NUMA cell (the flavor's memory is the cell's boot memory; a
live resize raises the device's requested size with LIVE|CONFIG, so a restart keeps it,
and the next cold step defines the guest afresh). Headroom costs address space, not
RAM: only what is plugged is claimed and used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
from xml.sax.saxutils import escape

TARGET = "vda"  # the root disk's device name in the guest (and in block jobs)


def mac_of(uuid: str) -> str:
    """A stable MAC from the uuid: the guest keeps its address across resize and migration."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


@dataclasses.dataclass(frozen=True, kw_only=True)
class Definition:
    virt_type: str  # kvm, or qemu (TCG)
    name: str
    uuid: str  # the domain's UUID
    instance_uuid: str  # for the MAC: the same on every node
    description: str
    memory_mib: int
    vcpus: int
    disk: pathlib.Path
    console: pathlib.Path
    image: pathlib.Path  # a directory with vmlinuz + initrd.img boots the kernel directly
    max_vcpus: int = 0  # hot-plug ceiling; <= vcpus: none
    max_memory_mib: int = 0  # hot-plug ceiling; <= memory_mib: no virtio-mem device


VIRTIO_MEM_BLOCK_MIB = 2  # virtio-mem's block on x86: plugged sizes are multiples of it


def _memory(d: Definition) -> tuple[str, str, str]:
    """(memory elements, NUMA cpu block, virtio-mem device) for the definition."""
    boot = d.memory_mib
    headroom = d.max_memory_mib - boot
    headroom -= headroom % VIRTIO_MEM_BLOCK_MIB
    if headroom <= 0:
        return f"<memory unit='MiB'>{d.memory_mib}</memory>", "", ""
    top = max(d.vcpus, d.max_vcpus) - 1
    elements = (
        f"<maxMemory slots='1' unit='MiB'>{boot + headroom}</maxMemory>\n"
        f"  <memory unit='MiB'>{boot + headroom}</memory>"
    )
    numa = f"<cpu><numa><cell id='0' cpus='0-{top}' memory='{boot}' unit='MiB'/></numa></cpu>"
    device = (
        "<memory model='virtio-mem'><target>"
        f"<size unit='MiB'>{headroom}</size><node>0</node>"
        f"<block unit='MiB'>{VIRTIO_MEM_BLOCK_MIB}</block>"
        "<requested unit='MiB'>0</requested>"
        "</target></memory>"
    )
    return elements, numa, device


def xml(d: Definition) -> str:
    boot = ""
    if (d.image / "vmlinuz").exists():  # direct kernel boot (the test guest image)
        boot = (
            f"<kernel>{escape(str(d.image / 'vmlinuz'))}</kernel>"
            f"<initrd>{escape(str(d.image / 'initrd.img'))}</initrd>"
            # Hot-added memory comes online by itself, in the movable zone: what a live
            # resize plugged, the guest can give back on a live revert. The hot-plug range
            # lies above 4 GiB, which makes the kernel reserve 64 MiB of DMA bounce buffers
            # (swiotlb) that virtio devices never use: 2 MiB is kept (measured: a 256 MiB
            # guest sees 143 MiB without this, 203 MiB with it, 206 MiB with no headroom).
            "<cmdline>console=ttyS0 quiet panic=-1 memhp_default_state=online_movable "
            "swiotlb=1024</cmdline>"
        )
    memory, numa, virtio_mem = _memory(d)
    vcpu = f"<vcpu>{d.vcpus}</vcpu>"
    if d.max_vcpus > d.vcpus:
        vcpu = f"<vcpu placement='static' current='{d.vcpus}'>{d.max_vcpus}</vcpu>"
    return f"""<domain type='{d.virt_type}'>
  <name>{d.name}</name>
  <uuid>{d.uuid}</uuid>
  <description>{escape(d.description)}</description>
  {memory}
  {vcpu}
  <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os>
  {numa}
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(d.disk))}'/>
      <target dev='{TARGET}' bus='virtio'/>
    </disk>
    <interface type='user'>
      <mac address='{mac_of(d.instance_uuid)}'/><model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{escape(str(d.console))}' append='on'/><target port='0'/>
    </serial>
    {virtio_mem}
  </devices>
</domain>"""
