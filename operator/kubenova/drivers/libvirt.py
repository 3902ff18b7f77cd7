"""The libvirt driver: real QEMU guests through libvirt-python (qemu:///system).

Layout under `instancesPath`: `<uuid>/disk` (qcow2), `console/<uuid>.log`; during a resize
the original directory is renamed `<uuid>_resize` (the revert point, Nova's name).

Same-host resize without a copy on the critical path: the original directory is renamed
(constant time) and the new disk is a qcow2 overlay backed by the original disk, grown
to the new size. Downtime does not depend on how much data the disk holds. Confirm then
makes the overlay standalone (a block pull, live if the guest runs) before deleting the
revert point; revert drops the overlay and renames the original back. See
docs/libvirt-driver.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import pathlib
import re
import shutil
import subprocess
import time
import uuid as uuids
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from kubenova import faults
from kubenova.drivers import base
from kubenova.scheduling.amounts import Amount

GIB = 1024**3
BLOCK_JOB_POLL = 0.2  # seconds between block-pull progress checks
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # an image name: never a path


def _qemu_img(*args: str) -> str:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise base.DriverError(f"qemu-img {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def disk_info(path: pathlib.Path) -> dict[str, Any]:
    return json.loads(_qemu_img("info", "--output=json", "-U", str(path)))  # type: ignore[no-any-return]


def mac_of(uuid: str) -> str:
    """A stable MAC from the uuid: the guest keeps its address across resize and migration."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


class LibvirtDriver:
    name = "libvirt"

    def __init__(
        self,
        *,
        uri: str,
        instances_path: pathlib.Path,
        images_path: pathlib.Path | None = None,
        virt_type: str = "kvm",
        domain_prefix: str = "",
    ) -> None:
        """`domain_prefix` lets several agents share one libvirtd (two simulated nodes on one
        machine): domain name and UUID are then derived from the prefix and the instance
        uuid. Empty (one agent per libvirtd, as on real nodes): both are the instance uuid."""
        self.domain_prefix = domain_prefix
        self.uri = uri
        self.root = instances_path
        self.images = images_path
        self.virt_type = virt_type
        (self.root / "console").mkdir(parents=True, exist_ok=True)
        self._conn: libvirt.virConnect | None = None

    # --- plumbing --------------------------------------------------------------------------

    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None or not self._conn.isAlive():
            self._conn = libvirt.open(self.uri)
        return self._conn

    def _dir(self, uuid: str) -> pathlib.Path:
        return self.root / uuid

    def _resize_dir(self, uuid: str) -> pathlib.Path:
        return self.root / f"{uuid}_resize"

    def console_log(self, uuid: str) -> pathlib.Path:
        """One serial log per instance and node, kept across resize and revert (the
        instance directory is renamed during a resize; the console history should not be)."""
        return self.root / "console" / f"{uuid}.log"

    def domain_uuid(self, uuid: str) -> str:
        if not self.domain_prefix:
            return uuid
        return str(uuids.uuid5(uuids.NAMESPACE_URL, f"kubenova:{self.domain_prefix}:{uuid}"))

    def domain_name(self, uuid: str) -> str:
        return f"{self.domain_prefix}-{uuid}" if self.domain_prefix else uuid

    def _domain(self, uuid: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByUUIDString(self.domain_uuid(uuid))
        except libvirt.libvirtError:
            return None

    @staticmethod
    async def _run(fn: Any, *args: Any) -> Any:
        # libvirt-python and qemu-img block: keep them off the event loop.
        return await asyncio.to_thread(fn, *args)

    def _xml(self, guest: base.Guest, image: pathlib.Path) -> str:
        d = self._dir(guest.uuid)
        boot = ""
        if (image / "vmlinuz").exists():  # direct kernel boot (the test guest image)
            boot = (
                f"<kernel>{escape(str(image / 'vmlinuz'))}</kernel>"
                f"<initrd>{escape(str(image / 'initrd.img'))}</initrd>"
                "<cmdline>console=ttyS0 quiet panic=-1</cmdline>"
            )
        return f"""<domain type='{self.virt_type}'>
  <name>{self.domain_name(guest.uuid)}</name>
  <uuid>{self.domain_uuid(guest.uuid)}</uuid>
  <description>{escape(guest.name)}</description>
  <memory unit='MiB'>{guest.flavor.memory_mib}</memory>
  <vcpu>{guest.flavor.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>{boot}</os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{escape(str(d / "disk"))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><mac address='{mac_of(guest.uuid)}'/><model type='virtio'/></interface>
    <serial type='file'>
      <source path='{escape(str(self.console_log(guest.uuid)))}' append='on'/><target port='0'/>
    </serial>
  </devices>
</domain>"""

    def _image(self, guest: base.Guest) -> pathlib.Path:
        """`spec.image` is an absolute path on the node, or a name under `images_path`
        (a directory with `vmlinuz` + `initrd.img` and/or `disk.qcow2`, or a disk file)."""
        image = pathlib.Path(guest.image)
        if not image.is_absolute() and self.images is not None and NAME.match(guest.image):
            image = self.images / guest.image
        if not image.is_absolute() or not image.exists():
            where = f" (looked in {self.images})" if self.images is not None else ""
            raise base.DriverError(
                f"image {guest.image} not found on this node{where}: "
                "give an absolute path or the name of an image in the images path"
            )
        return image

    def _define(self, guest: base.Guest) -> libvirt.virDomain:
        (self._dir(guest.uuid) / "image").write_text(guest.image)
        return self.conn.defineXML(self._xml(guest, self._image(guest)))

    def _start(self, uuid: str) -> None:
        dom = self._domain(uuid)
        if dom is not None and not dom.isActive():
            dom.create()

    def _stop(self, uuid: str, timeout: float) -> None:
        """ACPI shutdown for up to `timeout` seconds, then destroy (Nova's clean shutdown)."""
        dom = self._domain(uuid)
        if dom is None or not dom.isActive():
            return
        if timeout > 0:
            with contextlib.suppress(libvirt.libvirtError):  # no ACPI: forced below
                dom.shutdown()
            deadline = time.monotonic() + timeout
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.1)
        if dom.isActive():
            dom.destroy()

    def _grow_disk(self, disk: pathlib.Path, gib: int) -> None:
        current = int(disk_info(disk)["virtual-size"])
        if gib * GIB < current:
            raise base.DriverError(f"disks never shrink: {current // GIB} GiB -> {gib} GiB")
        if gib * GIB > current:
            _qemu_img("resize", "-q", str(disk), f"{gib}G")

    # --- the protocol ----------------------------------------------------------------------

    async def capacity(self) -> Amount:
        info = await self._run(self.conn.getInfo)
        disk = shutil.disk_usage(self.root).total // GIB
        return Amount(int(info[2]), int(info[1]), int(disk))

    async def spawn(self, guest: base.Guest) -> None:
        await self._run(self._spawn, guest)

    def _spawn(self, guest: base.Guest) -> None:
        d = self._dir(guest.uuid)
        d.mkdir(parents=True, exist_ok=True)
        disk = d / "disk"
        if not disk.exists():
            image = self._image(guest)
            base_disk = image / "disk.qcow2" if image.is_dir() else image
            tmp = d / "disk.part"
            if base_disk.exists():
                _qemu_img("convert", "-q", "-O", "qcow2", str(base_disk), str(tmp))
            else:
                _qemu_img("create", "-q", "-f", "qcow2", str(tmp), f"{guest.flavor.disk_gib}G")
            tmp.rename(disk)  # a crash never leaves a half-copied disk named `disk`
        self._grow_disk(disk, guest.flavor.disk_gib)
        self._define(guest)
        if guest.power_on:
            self._start(guest.uuid)

    async def power_off(self, uuid: str, timeout: float) -> None:
        await self._run(self._stop, uuid, timeout)

    async def power_on(self, uuid: str) -> None:
        await self._run(self._start, uuid)

    async def migrate_disk_and_power_off(
        self, uuid: str, *, same_host: bool, timeout: float
    ) -> None:
        await self._run(self._set_aside, uuid, same_host, timeout)

    def _set_aside(self, uuid: str, same_host: bool, timeout: float) -> None:
        self._stop(uuid, timeout)
        faults.point("agent", "libvirt:stopped")
        if same_host and self._dir(uuid).exists() and not self._resize_dir(uuid).exists():
            self._dir(uuid).rename(self._resize_dir(uuid))  # constant time: the revert point
            faults.point("agent", "libvirt:renamed")

    async def finish_migration(self, guest: base.Guest, *, same_host: bool) -> None:
        await self._run(self._finish, guest, same_host)

    def _finish(self, guest: base.Guest, same_host: bool) -> None:
        d = self._dir(guest.uuid)
        d.mkdir(parents=True, exist_ok=True)
        disk = d / "disk"
        if same_host and not disk.exists():
            original = self._resize_dir(guest.uuid) / "disk"
            if not original.exists():
                raise base.DriverError(f"revert point {original} is missing")
            tmp = d / "disk.part"
            _qemu_img("create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(original), str(tmp))
            tmp.rename(disk)
            faults.point("agent", "libvirt:overlay-created")
        if not disk.exists():
            raise base.DriverError(f"no disk for {guest.uuid} on this node (transfer not done)")
        self._grow_disk(disk, guest.flavor.disk_gib)
        faults.point("agent", "libvirt:grown")
        self._define(guest)
        faults.point("agent", "libvirt:defined")
        if guest.power_on:
            self._start(guest.uuid)

    async def confirm_migration(self, uuid: str, *, same_host: bool) -> None:
        await self._run(self._confirm, uuid, same_host)

    def _confirm(self, uuid: str, same_host: bool) -> None:
        if not same_host:
            self._destroy(uuid)
            return
        if not self._resize_dir(uuid).exists():
            return
        disk = self._dir(uuid) / "disk"
        if "backing-filename" in disk_info(disk):
            dom = self._domain(uuid)
            if dom is not None and dom.isActive():
                # Live block pull: the guest keeps running while its overlay absorbs the
                # backing data; no downtime for the confirm.
                dom.blockPull("vda", 0, 0)
                while dom.blockJobInfo("vda", 0):
                    time.sleep(BLOCK_JOB_POLL)
            else:
                _qemu_img("rebase", "-q", "-f", "qcow2", "-b", "", str(disk))
        shutil.rmtree(self._resize_dir(uuid))

    async def finish_revert_migration(self, guest: base.Guest, *, same_host: bool) -> None:
        await self._run(self._revert, guest, same_host)

    def _revert(self, guest: base.Guest, same_host: bool) -> None:
        if self._resize_dir(guest.uuid).exists():
            dom = self._domain(guest.uuid)
            if dom is not None and dom.isActive():
                dom.destroy()  # the new guest is discarded: no graceful shutdown needed
            faults.point("agent", "libvirt:new-destroyed")
            shutil.rmtree(self._dir(guest.uuid), ignore_errors=True)
            faults.point("agent", "libvirt:new-removed")
            self._resize_dir(guest.uuid).rename(self._dir(guest.uuid))
            faults.point("agent", "libvirt:original-restored")
        self._define(guest)
        if guest.power_on:
            self._start(guest.uuid)

    async def destroy(self, uuid: str) -> None:
        await self._run(self._destroy, uuid)

    def _destroy(self, uuid: str) -> None:
        dom = self._domain(uuid)
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        for d in (self._dir(uuid), self._resize_dir(uuid)):
            shutil.rmtree(d, ignore_errors=True)
        self.console_log(uuid).unlink(missing_ok=True)

    async def get_info(self, uuid: str) -> base.GuestInfo | None:
        return await self._run(self._info, uuid)  # type: ignore[no-any-return]

    def _info(self, uuid: str) -> base.GuestInfo | None:
        dom = self._domain(uuid)
        disk = self._dir(uuid) / "disk"
        if dom is None or not disk.exists():
            return None
        state, max_kib, _, vcpus, _ = dom.info()
        power = base.Power.RUNNING if state == libvirt.VIR_DOMAIN_RUNNING else base.Power.STOPPED
        size = int(disk_info(disk)["virtual-size"]) // GIB
        return base.GuestInfo(
            power=power, vcpus=int(vcpus), memory_mib=int(max_kib) // 1024, disk_gib=size
        )

    def disk_path(self, uuid: str) -> pathlib.Path | None:
        disk = self._dir(uuid) / "disk"
        return disk if disk.exists() else None

    def incoming_disk(self, uuid: str) -> pathlib.Path | None:
        self._dir(uuid).mkdir(parents=True, exist_ok=True)
        return self._dir(uuid) / "disk"

    async def list_guests(self) -> list[str]:
        return await self._run(self._list)  # type: ignore[no-any-return]

    def _list(self) -> list[str]:
        names = {
            p.name.removesuffix("_resize")
            for p in self.root.iterdir()
            if p.is_dir() and p.name != "console"
        }
        return sorted(names)
