"""Cross-node disk hand-off: the destination agent pulls the disk from the source agent.

One HTTP GET per file (`disk`, or a pre-copy's `delta`), authenticated by the migration's
own token (a bearer token derived from the agents' shared transfer key and the Migration's
uid: `token()`); the path on disk
comes from the migration, never from the request. With the chart's transfer CA it is HTTPS:
the source serves a certificate for its node (agent/certificate.py) and the destination
verifies it under the source's node name (`pull(tls=, node=)`). `?from=N` asks for the
data at offsets from N on (a resumed transfer). The body is:

    b"KNOVA3\n" + JSON line {"size": <file size>, "identity": <inode-mtime>, "from": N,
                              "bytes": <allocated bytes to send>}
    repeated: offset (8 bytes, big-endian) | length (8) | data | XXH3-64 of the three (8)
              <- allocated data only, frames of at most FRAME_MAX bytes, in offset order
    trailer:  0xFFFFFFFFFFFFFFFF | XXH3-128 of everything sent before the trailer

Only allocated ranges are sent (SEEK_DATA/SEEK_HOLE), so a mostly empty 8 GiB disk costs
what it holds. The receiver writes into a sparse `<disk>.part`, checks each frame's digest
as it ends, and records how far the verified frames reach in `<disk>.part.json` (with the
node's boot id): a transfer cut by a reset, a restarted source or a restarted destination
agent resumes from there instead of from zero. The trailer is checked before the file is
renamed into place; damage (a frame or the trailer not matching) throws the partial file
away. The source is untouched
either way (it deletes its copy only at confirm).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import pathlib
import re
import secrets
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import xxhash
from aiohttp import web

from kubenova import faults
from kubenova.api import migration

log = logging.getLogger(__name__)
Part = migration.Part  # what a GET asks for, as the Migration's status names it

MAGIC = b"KNOVA3\n"  # 3: frame digests and resume (2: XXH3-128 trailer; 1 had sha256)
END = 0xFFFFFFFFFFFFFFFF
CHUNK = 4 << 20  # 4 MiB reads: few enough calls for throughput, two in memory at once
FRAME = struct.Struct(">QQ")
FRAME_DIGEST = 8  # XXH3-64 after each frame's data
# A frame is the unit a cut transfer resumes at: small enough that little is sent twice,
# large enough that its digest costs nothing (64 MiB: ~0.3 s of data at disk speed).
FRAME_MAX = 64 << 20
HALF_SENT_MARK = 200 << 20  # where the `transfer-sending` fault point kills a source
# Progress is recorded after every frame, without an fsync: the data and the record sit in
# the page cache, which survives the agent being killed; a record made before the node
# rebooted (another boot id) is not trusted, since the data it vouches for may be lost.
# (An fsync per frame stalled the writes behind it and cost 40-160 % on dense disks.)
PROGRESS_EVERY = FRAME_MAX
BOOT_ID = pathlib.Path("/proc/sys/kernel/random/boot_id")
# The trailer guards against corruption, not against an attacker (the migration's token,
# and TLS where the network is untrusted, do that): XXH3-128, rsync's whole-file checksum,
# hashes ~10x faster than sha256 here, which otherwise bounds the transfer on both ends.
DIGEST_BYTES = 16
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123: no '/', no '..' alone


class TransferError(Exception):
    """A transfer failed. `transient`: the network or the source went away (a reset, a
    restart, a source not serving yet); retrying resumes. Otherwise it cannot succeed as
    asked (refused, damaged data)."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def ensure_key_file(path: pathlib.Path) -> pathlib.Path:
    """A random transfer key at `path` (kept if there): what the Helm chart's Secret holds,
    for agents started by hand (make up, tests). Readable by its owner only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path


def token(key: bytes, migration_uid: str) -> str:
    """The bearer token of one migration: HMAC-SHA256 of its uid under the transfer key.
    Both agents compute it from what they already hold, so no per-migration Secret is
    written (a write and an API round trip saved on every cross-node move) and no agent
    needs to read Secrets; a token is worth one migration's disk, and a new Migration
    (a new uid) gets a new one."""
    if not key:
        raise TransferError("no transfer key (agent --transfer-key-file)")
    mac = hmac.new(key, b"kubenova-transfer/v1:" + migration_uid.encode(), hashlib.sha256)
    return mac.hexdigest()


@dataclasses.dataclass(frozen=True)
class Offer:
    """What the source will serve for one migration: the file and the token guarding it."""

    path: pathlib.Path
    token: str


# (namespace, migration, part) -> offer
Lookup = Callable[[str, str, Part], Awaitable[Offer | None]]
Progress = Callable[[int, int], None]  # (payload bytes received, bytes to receive)


def extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the allocated ranges of a file."""
    found, offset = [], 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            break
        end = os.lseek(fd, start, os.SEEK_HOLE)
        found.append((start, end - start))
        offset = end
    return found


@dataclasses.dataclass(frozen=True)
class _Read:
    offset: int
    length: int
    header: bytes  # the frame header before the first read of a frame, else empty
    last: bool  # the frame's last read: its digest follows


def _plan(ranges: list[tuple[int, int]], start: int) -> list[_Read]:
    """The reads that send every allocated byte at `start` or after, in frames of at most
    FRAME_MAX bytes, each read at most CHUNK bytes."""
    out = []
    for first, length in ranges:
        end = first + length
        for frame in range(max(first, start), end, FRAME_MAX):
            frame_end = min(end, frame + FRAME_MAX)
            header = FRAME.pack(frame, frame_end - frame)
            for read in range(frame, frame_end, CHUNK):
                size = min(CHUNK, frame_end - read)
                out.append(
                    _Read(read, size, header if read == frame else b"", read + size == frame_end)
                )
    return out


def identity(stat: os.stat_result) -> str:
    """What must not change between a transfer and its resumption."""
    return f"{stat.st_ino}-{stat.st_mtime_ns}-{stat.st_size}"


async def stream(path: pathlib.Path, start: int = 0, corrupt: bool = False) -> AsyncIterator[bytes]:
    """The wire body for `path` from offset `start`. `corrupt` flips one byte after
    hashing (tests only).

    Reading and hashing run on a worker thread one chunk ahead of the network, so the
    disk, the hash and the socket work at once (file reads and large hashes release the GIL)."""
    digest = xxhash.xxh3_128()
    frame_digest = xxhash.xxh3_64()
    with path.open("rb") as f:
        fd = f.fileno()
        stat = os.fstat(fd)
        size = stat.st_size
        plan = _plan(extents(fd, size), start)
        total = sum(r.length for r in plan)
        meta = {"size": size, "identity": identity(stat), "from": start, "bytes": total}
        header = MAGIC + json.dumps(meta).encode() + b"\n"
        digest.update(header)
        yield header

        def read(r: _Read) -> bytes:
            data = os.pread(fd, r.length, r.offset)
            if len(data) != r.length:
                raise TransferError(f"{path} shrank while being sent")
            if r.header:
                frame_digest.reset()
                frame_digest.update(r.header)
            frame_digest.update(data)
            tail = frame_digest.digest() if r.last else b""
            digest.update(r.header)
            digest.update(data)
            digest.update(tail)
            return r.header + data + tail

        def fetch(i: int) -> asyncio.Future[bytes] | None:
            if i == len(plan):
                return None
            return asyncio.ensure_future(asyncio.to_thread(read, plan[i]))

        ahead = fetch(0)
        try:
            for i in range(len(plan)):
                assert ahead is not None
                chunk = await ahead
                ahead = fetch(i + 1)
                if corrupt:
                    chunk, corrupt = chunk[:-1] + bytes([chunk[-1] ^ 0xFF]), False
                yield chunk
        finally:  # the client went away: let the read in flight finish before the file closes
            if ahead is not None:
                with contextlib.suppress(Exception):
                    await ahead
    yield FRAME.pack(END, 0) + digest.digest()


class _Sink:
    """The receiving file: hashing and writing run on a worker thread, one chunk behind
    the network reads and strictly in order (the digests cover the stream's order)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = xxhash.xxh3_128()
        self.frame = xxhash.xxh3_64()
        self._pending: asyncio.Future[None] | None = None

    async def drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def hash(self, data: bytes, *, frame: bool = False) -> None:
        await self.drain()
        self.digest.update(data)
        if frame:
            self.frame.reset()
            self.frame.update(data)

    async def write(self, offset: int, data: bytes) -> None:
        await self.drain()
        self._pending = asyncio.ensure_future(asyncio.to_thread(self._write, offset, data))

    def _write(self, offset: int, data: bytes) -> None:
        self.digest.update(data)
        self.frame.update(data)
        os.pwrite(self.fd, data, offset)


def _boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


@dataclasses.dataclass
class Partial:
    """A transfer in progress: `<disk>.part` and how far its verified frames reach."""

    dest: pathlib.Path

    @property
    def part(self) -> pathlib.Path:
        return self.dest.with_name(self.dest.name + ".part")

    @property
    def record(self) -> pathlib.Path:
        return self.dest.with_name(self.dest.name + ".part.json")

    def resume_from(self) -> tuple[int, str]:
        """(offset, source identity) to resume at; (0, "") to start afresh."""
        try:
            saved = json.loads(self.record.read_text())
        except (OSError, ValueError):
            return 0, ""
        if not self.part.exists() or saved.get("boot") != _boot_id():
            return 0, ""  # written before a reboot: the page cache it relied on is gone
        return int(saved["verified"]), str(saved["identity"])

    def save(self, verified: int, source: str) -> None:
        tmp = self.record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"verified": verified, "identity": source, "boot": _boot_id()}))
        tmp.replace(self.record)

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)


async def receive(
    content: aiohttp.StreamReader,
    dest: pathlib.Path,
    *,
    resuming: str = "",
    progress: Progress | None = None,
) -> int:
    """Write the stream into `dest` (sparse); returns payload bytes received. `resuming`:
    the source identity the partial file was made from (the stream must start where its
    record says); `progress` is told after every frame. Damage throws the partial file
    away; a cut keeps it for a resumption."""
    partial = Partial(dest)
    received = 0
    sink: _Sink | None = None
    try:
        magic = await content.readexactly(len(MAGIC))
        if magic != MAGIC:
            raise TransferError("not a kubenova disk stream")
        header = await content.readline()
        meta = json.loads(header)
        size, source, start = int(meta["size"]), str(meta["identity"]), int(meta["from"])
        total = int(meta.get("bytes", size))  # a source before "bytes": the file's size
        if start and source != resuming:
            partial.discard()
            raise TransferError("the source disk changed since the transfer began", transient=True)
        mode = "r+b" if start else "wb"
        with partial.part.open(mode) as out:
            out.truncate(size)
            sink = _Sink(out.fileno())
            await sink.hash(magic + header)
            tell = (lambda n: progress(n, total)) if progress is not None else None
            received = await _frames(content, sink, partial, (start, size, source), tell)
            await sink.drain()
            os.fsync(out.fileno())
        expected = await content.readexactly(DIGEST_BYTES)
        if not hmac.compare_digest(expected, sink.digest.digest()):
            raise TransferError("checksum mismatch: the disk arrived damaged")
        partial.part.replace(dest)
        partial.record.unlink(missing_ok=True)
    except TransferError as exc:
        await _settle(sink)
        if not exc.transient:
            partial.discard()
        raise
    except (
        aiohttp.ClientPayloadError,
        aiohttp.ClientConnectionError,
        EOFError,
        TimeoutError,
    ) as exc:
        await _settle(sink)  # cut: keep what was verified, for the next attempt
        raise TransferError(f"cut: {exc or type(exc).__name__}", transient=True) from exc
    except ValueError as exc:
        await _settle(sink)
        partial.discard()
        raise TransferError(str(exc)) from exc
    except BaseException:
        await _settle(sink)
        raise
    return received


async def _frames(
    content: aiohttp.StreamReader,
    sink: _Sink,
    partial: Partial,
    where: tuple[int, int, str],
    tell: Callable[[int], None] | None,
) -> int:
    """Receive frames up to the trailer, each verified as it ends; returns payload bytes."""
    start, size, source = where
    received, verified, recorded = 0, start, start
    while True:
        raw = await content.readexactly(FRAME.size)
        offset, length = FRAME.unpack(raw)
        if offset == END:
            return received
        await sink.hash(raw, frame=True)
        if offset < verified or offset + length > size:
            raise TransferError("a frame out of order or beyond the end of the disk")
        for chunk in range(offset, offset + length, CHUNK):
            await sink.write(chunk, await content.readexactly(min(CHUNK, offset + length - chunk)))
        await sink.drain()
        tail = await content.readexactly(FRAME_DIGEST)
        if not hmac.compare_digest(tail, sink.frame.digest()):
            raise TransferError(f"checksum mismatch in the frame at {offset}: damaged")
        await sink.hash(tail)
        received += length
        verified = offset + length
        if tell is not None:
            tell(received)
        if verified - recorded >= PROGRESS_EVERY:
            partial.save(verified, source)  # all up to `verified` is written
            recorded = verified


async def _settle(sink: _Sink | None) -> None:
    """Let a write in flight finish before its file is removed."""
    if sink is not None:
        with contextlib.suppress(Exception):
            await sink.drain()


async def pull(
    url: str,
    token: str,
    dest: pathlib.Path,
    *,
    tls: ssl.SSLContext | None = None,
    node: str | None = None,
    progress: Progress | None = None,
) -> tuple[int, int]:
    """GET the disk at `url` into `dest`, resuming a partial transfer there; returns
    (offset it resumed from, payload bytes received). `tls`: verify the source with it,
    its certificate issued for `node` (the source's node name, whatever address `url` has)."""
    start, source = Partial(dest).resume_from()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    verify: dict[str, Any] = {"ssl": tls, "server_hostname": node} if tls is not None else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(
                url,
                params={"from": str(start)},
                headers={"Authorization": f"Bearer {token}"},
                **verify,
            ) as response,
        ):
            if response.status != 200:
                # 404: the source does not serve it (yet: its agent restarting, its caches
                # syncing); 5xx: it failed. 401/403: it never will for this token.
                raise TransferError(
                    f"source refused the transfer: HTTP {response.status}",
                    transient=response.status == 404 or response.status >= 500,
                )
            received = await receive(response.content, dest, resuming=source, progress=progress)
            return start, received
    except aiohttp.ClientConnectorCertificateError as exc:
        # Not a passing fault: this source is not who the transfer CA says `node` is.
        raise TransferError(f"source's certificate refused: {exc.certificate_error}") from exc
    except aiohttp.ClientConnectionError as exc:
        raise TransferError(f"source unreachable: {exc}", transient=True) from exc
    except TimeoutError as exc:
        raise TransferError("source stopped answering", transient=True) from exc


def app(lookup: Lookup, *, corrupt: bool = False) -> web.Application:
    """The source side: serves `/v1/migrations/{namespace}/{name}/{disk,delta}`."""

    async def disk(request: web.Request) -> web.StreamResponse:
        # No token, no answer: whether a migration is served here is not said to anyone
        # without one (its token, derived from its uid, is checked once it is found).
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not given:
            raise web.HTTPUnauthorized()
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if not (NAME.match(namespace) and NAME.match(name)):
            raise web.HTTPNotFound()
        try:
            part = Part(request.match_info["part"])
        except ValueError:
            raise web.HTTPNotFound() from None
        offer = await lookup(namespace, name, part)
        if offer is None:
            raise web.HTTPNotFound()
        if not hmac.compare_digest(given.encode(), offer.token.encode()):
            raise web.HTTPUnauthorized()
        if not offer.path.is_file():
            raise web.HTTPNotFound()
        try:
            start = int(request.query.get("from", "0"))
        except ValueError:
            raise web.HTTPBadRequest() from None
        if start < 0:
            raise web.HTTPBadRequest()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        sent = 0
        async for chunk in stream(offer.path, start, corrupt=corrupt):
            await response.write(chunk)
            sent += len(chunk)
            if sent > HALF_SENT_MARK and sent - len(chunk) <= HALF_SENT_MARK:
                faults.point("agent", "transfer-sending")  # a source killed mid-stream
        await response.write_eof()
        return response

    application = web.Application()
    application.router.add_get("/v1/migrations/{namespace}/{name}/{part}", disk)
    return application
