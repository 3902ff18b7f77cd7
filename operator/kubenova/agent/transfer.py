"""Cross-node disk hand-off: the destination agent pulls the disk from the source agent.

One HTTP GET per disk, authenticated by the migration's own token (a bearer token derived
from the agents' shared transfer key and the Migration's uid: `token()`); the path on disk
comes from the migration, never from the request. The body is:

    b"KNOVA2\\n" + JSON line {"size": <file size>}
    repeated: offset (8 bytes, big-endian) | length (8 bytes) | data      <- allocated data only
    trailer:  0xFFFFFFFFFFFFFFFF | XXH3-128 of everything sent before the trailer

Only allocated ranges are sent (SEEK_DATA/SEEK_HOLE), so a mostly empty 8 GiB disk costs
what it holds. The receiver writes into a sparse temporary file, checks the digest, and
only then renames it into place: a corrupted or cut transfer leaves nothing behind, and
the source is untouched either way (it deletes its copy only at confirm).
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
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import xxhash
from aiohttp import web

log = logging.getLogger(__name__)

MAGIC = b"KNOVA2\n"  # 2: XXH3-128 trailer (1 had sha256)
END = 0xFFFFFFFFFFFFFFFF
CHUNK = 4 << 20  # 4 MiB reads: few enough calls for throughput, two in memory at once
FRAME = struct.Struct(">QQ")
# The trailer guards against corruption, not against an attacker (the migration's token,
# and TLS where the network is untrusted, do that): XXH3-128, rsync's whole-file checksum,
# hashes ~10x faster than sha256 here, which otherwise bounds the transfer on both ends.
DIGEST_BYTES = 16
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123: no '/', no '..' alone


class TransferError(Exception):
    pass


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


Lookup = Callable[[str, str], Awaitable[Offer | None]]  # (namespace, migration) -> offer


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


def _chunks(ranges: list[tuple[int, int]]) -> list[tuple[int, int, bytes]]:
    """(offset, length, frame) for every read of at most CHUNK bytes; the frame header
    goes before the first chunk of each extent and is empty for the others."""
    out = []
    for start, length in ranges:
        for offset in range(start, start + length, CHUNK):
            frame = FRAME.pack(start, length) if offset == start else b""
            out.append((offset, min(CHUNK, start + length - offset), frame))
    return out


async def stream(path: pathlib.Path, corrupt: bool = False) -> AsyncIterator[bytes]:
    """The wire body for `path`. `corrupt` flips one byte after hashing (tests only).

    Reading and hashing run on a worker thread one chunk ahead of the network, so the
    disk, the hash and the socket work at once (file reads and large hashes release the GIL)."""
    digest = xxhash.xxh3_128()
    with path.open("rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        header = MAGIC + json.dumps({"size": size}).encode() + b"\n"
        digest.update(header)
        yield header
        plan = _chunks(extents(fd, size))

        def read(offset: int, length: int, frame: bytes) -> bytes:
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise TransferError(f"{path} shrank while being sent")
            digest.update(frame)
            digest.update(data)
            return frame + data

        def fetch(i: int) -> asyncio.Future[bytes] | None:
            if i == len(plan):
                return None
            return asyncio.ensure_future(asyncio.to_thread(read, *plan[i]))

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
    the network reads and strictly in order (the digest covers the stream's order)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = xxhash.xxh3_128()
        self._pending: asyncio.Future[None] | None = None

    async def drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    async def hash(self, data: bytes) -> None:
        await self.drain()
        self.digest.update(data)

    async def write(self, offset: int, data: bytes) -> None:
        await self.drain()
        self._pending = asyncio.ensure_future(asyncio.to_thread(self._write, offset, data))

    def _write(self, offset: int, data: bytes) -> None:
        self.digest.update(data)
        os.pwrite(self.fd, data, offset)


async def receive(content: aiohttp.StreamReader, dest: pathlib.Path) -> int:
    """Write the stream into `dest` (sparse); returns payload bytes. Raises on any damage,
    leaving no file at `dest`."""
    tmp = dest.with_name(dest.name + ".part")
    received = 0
    sink: _Sink | None = None
    try:
        magic = await content.readexactly(len(MAGIC))
        if magic != MAGIC:
            raise TransferError("not a kubenova disk stream")
        header = await content.readline()
        size = int(json.loads(header)["size"])
        with tmp.open("wb") as out:
            out.truncate(size)
            sink = _Sink(out.fileno())
            await sink.hash(magic + header)
            while True:
                raw = await content.readexactly(FRAME.size)
                start, length = FRAME.unpack(raw)
                if start == END:
                    break
                await sink.hash(raw)
                if start + length > size:
                    raise TransferError("extent beyond the end of the disk")
                for offset in range(start, start + length, CHUNK):
                    data = await content.readexactly(min(CHUNK, start + length - offset))
                    await sink.write(offset, data)
                received += length
            await sink.drain()
            os.fsync(out.fileno())
        expected = await content.readexactly(DIGEST_BYTES)
        if not hmac.compare_digest(expected, sink.digest.digest()):
            raise TransferError("checksum mismatch: the disk arrived damaged")
        tmp.replace(dest)
    except (TransferError, aiohttp.ClientPayloadError, EOFError, ValueError) as exc:
        await _settle(sink)
        tmp.unlink(missing_ok=True)
        raise TransferError(str(exc)) from exc
    except BaseException:
        await _settle(sink)
        tmp.unlink(missing_ok=True)
        raise
    return received


async def _settle(sink: _Sink | None) -> None:
    """Let a write in flight finish before its file is removed."""
    if sink is not None:
        with contextlib.suppress(Exception):
            await sink.drain()


async def pull(url: str, token: str, dest: pathlib.Path) -> int:
    """GET the disk at `url` into `dest`; returns the payload bytes received."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        if response.status != 200:
            raise TransferError(f"source refused the transfer: HTTP {response.status}")
        return await receive(response.content, dest)


def app(lookup: Lookup, *, corrupt: bool = False) -> web.Application:
    """The source side: serves `/v1/migrations/{namespace}/{name}/disk`."""

    async def disk(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if not (NAME.match(namespace) and NAME.match(name)):
            raise web.HTTPNotFound()
        offer = await lookup(namespace, name)
        if offer is None:
            raise web.HTTPNotFound()
        given = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not given or not hmac.compare_digest(given.encode(), offer.token.encode()):
            raise web.HTTPUnauthorized()
        if not offer.path.is_file():
            raise web.HTTPNotFound()
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        async for chunk in stream(offer.path, corrupt=corrupt):
            await response.write(chunk)
        await response.write_eof()
        return response

    application = web.Application()
    application.router.add_get("/v1/migrations/{namespace}/{name}/disk", disk)
    return application
