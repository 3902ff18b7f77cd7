"""The libvirt domain definition of a guest: pure text from what the driver decided.

The same uuid gives the same MAC, so a guest keeps its address across resize and
migration; the disk path and the console log come from the instance's layout.
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


def xml(d: Definition) -> str:
    boot = ""
    if (d.image / "vmlinuz").exists():  # direct kernel boot (the test guest image)
        boot = (
            f"<kernel>{escape(str(d.image / 'vmlinuz'))}</kernel>"
            f"<initrd>{escape(str(d.image / 'initrd.img'))}</initrd>"
            "<cmdline>console=ttyS0 quiet panic=-1</cmdline>"
        )
    return f"""<domain type='{d.virt_type}'>
  <name>{d.name}</name>
  <uuid>{d.uuid}</uuid>
  <description>{escape(d.description)}</description>
  <memory unit='MiB'>{d.memory_mib}</memory>
  <vcpu>{d.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os>
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
  </devices>
</domain>"""
