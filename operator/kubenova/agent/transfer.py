"""Cross-node disk hand-off: the destination agent pulls the disk from the source agent.

One HTTP GET per disk, authenticated by the migration's own secret (a bearer token);
the path on disk comes from the migration, never from the request. The body is:

    b"KNOVA1\\n" + JSON line {"size": <file size>}
    repeated: offset (8 bytes, big-endian) | length (8 bytes) | data      <- allocated data only
    trailer:  0xFFFFFFFFFFFFFFFF | sha256 of everything sent before the trailer

Only allocated ranges are sent (SEEK_DATA/SEEK_HOLE), so a mostly empty 8 GiB disk costs
what it holds. The receiver writes into a sparse temporary file, checks the digest, and
only then renames it into place: a corrupted or cut transfer leaves nothing behind, and
the source is untouched either way (it deletes its copy only at confirm).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import pathlib
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

log = logging.getLogger(__name__)

MAGIC = b"KNOVA1\n"
END = 0xFFFFFFFFFFFFFFFF
CHUNK = 1 << 20  # 1 MiB reads: big enough for throughput, small enough for memory
FRAME = struct.Struct(">QQ")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")  # DNS-1123: no '/', no '..' alone


class TransferError(Exception):
    pass


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


async def stream(path: pathlib.Path, corrupt: bool = False) -> AsyncIterator[bytes]:
    """The wire body for `path`. `corrupt` flips one byte after hashing (tests only)."""
    digest = hashlib.sha256()

    def emit(chunk: bytes) -> bytes:
        digest.update(chunk)
        return chunk

    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        yield emit(MAGIC + json.dumps({"size": size}).encode() + b"\n")
        for start, length in extents(f.fileno(), size):
            yield emit(FRAME.pack(start, length))
            f.seek(start)
            left = length
            while left:
                data = f.read(min(CHUNK, left))
                if not data:
                    raise TransferError(f"{path} shrank while being sent")
                left -= len(data)
                sent = emit(data)
                if corrupt:
                    sent, corrupt = bytes([sent[0] ^ 0xFF]) + sent[1:], False
                yield sent
    yield FRAME.pack(END, 0) + digest.digest()


class _Reader:
    def __init__(self, content: aiohttp.StreamReader) -> None:
        self.content = content
        self.digest = hashlib.sha256()

    async def exactly(self, n: int, *, hashed: bool = True) -> bytes:
        data = await self.content.readexactly(n)
        if hashed:
            self.digest.update(data)
        return data


async def receive(content: aiohttp.StreamReader, dest: pathlib.Path) -> int:
    """Write the stream into `dest` (sparse); returns payload bytes. Raises on any damage,
    leaving no file at `dest`."""
    reader = _Reader(content)
    tmp = dest.with_name(dest.name + ".part")
    received = 0
    try:
        if await reader.exactly(len(MAGIC)) != MAGIC:
            raise TransferError("not a kubenova disk stream")
        header = await content.readline()
        reader.digest.update(header)
        size = int(json.loads(header)["size"])
        with tmp.open("wb") as out:
            out.truncate(size)
            while True:
                raw = await reader.exactly(FRAME.size, hashed=False)
                start, length = FRAME.unpack(raw)
                if start == END:
                    break
                reader.digest.update(raw)
                if start + length > size:
                    raise TransferError("extent beyond the end of the disk")
                out.seek(start)
                left = length
                while left:
                    data = await reader.exactly(min(CHUNK, left))
                    out.write(data)
                    left -= len(data)
                received += length
            out.flush()
            os.fsync(out.fileno())
        expected = await reader.exactly(32, hashed=False)
        if not hmac.compare_digest(expected, reader.digest.digest()):
            raise TransferError("checksum mismatch: the disk arrived damaged")
        tmp.replace(dest)
    except (TransferError, aiohttp.ClientPayloadError, EOFError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise TransferError(str(exc)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return received


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
