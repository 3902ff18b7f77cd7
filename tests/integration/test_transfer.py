"""The cross-node disk hand-off over real HTTP on loopback: sparse, authenticated,
checksummed; refuses bad requests; a corrupted transfer leaves nothing and loses nothing."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubenova.agent import transfer

TOKEN = "s3cr3t-per-migration"
MIB = 1 << 20


def sparse_disk(path: pathlib.Path) -> pathlib.Path:
    """A 512 MiB file holding 3 MiB of data in two places, the rest holes."""
    with path.open("wb") as f:
        f.write(os.urandom(MIB))
        f.seek(256 * MIB)
        f.write(os.urandom(2 * MIB))
        f.truncate(512 * MIB)
    return path


def digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def serve(
    source: pathlib.Path, test: Callable[[str], Awaitable[Any]], corrupt: bool = False
) -> Any:
    async def lookup(namespace: str, name: str) -> transfer.Offer | None:
        if (namespace, name) == ("default", "vm-abcde"):
            return transfer.Offer(path=source, token=TOKEN)
        return None

    async def main() -> Any:
        runner = web.AppRunner(transfer.app(lookup, corrupt=corrupt))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return await test(f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_sparse_disk_arrives_identical_sending_only_its_data(tmp_path: pathlib.Path) -> None:
    source = sparse_disk(tmp_path / "disk")
    dest = tmp_path / "received"
    sent = serve(
        source, lambda url: transfer.pull(f"{url}/v1/migrations/default/vm-abcde/disk", TOKEN, dest)
    )
    assert sent == 3 * MIB  # only the allocated data crossed the wire
    assert dest.stat().st_size == source.stat().st_size
    assert digest(dest) == digest(source)
    assert dest.stat().st_blocks * 512 < 8 * MIB  # still sparse on the receiving side


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/migrations/default/vm-abcde/disk", {}, 401),
        ("/v1/migrations/default/vm-abcde/disk", {"Authorization": "Bearer wrong"}, 401),
        ("/v1/migrations/default/other/disk", {"Authorization": f"Bearer {TOKEN}"}, 404),
        (
            "/v1/migrations/default/..%2F..%2Fetc%2Fpasswd/disk",
            {"Authorization": f"Bearer {TOKEN}"},
            404,
        ),
        (
            "/v1/migrations/default/vm-abcde/../../../etc/passwd",
            {"Authorization": f"Bearer {TOKEN}"},
            404,
        ),
    ],
    ids=["no-secret", "wrong-secret", "other-migration", "encoded-traversal", "traversal"],
)
def test_source_refuses(
    tmp_path: pathlib.Path, path: str, headers: dict[str, str], status: int
) -> None:
    source = sparse_disk(tmp_path / "disk")

    async def request(url: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + path, headers=headers, allow_redirects=False) as response,
        ):
            return response.status

    assert serve(source, request) == status


def test_corrupted_transfer_is_detected_and_nothing_is_lost(tmp_path: pathlib.Path) -> None:
    source = sparse_disk(tmp_path / "disk")
    before = digest(source)
    dest = tmp_path / "received"

    async def pull(url: str) -> None:
        with pytest.raises(transfer.TransferError, match="checksum mismatch"):
            await transfer.pull(f"{url}/v1/migrations/default/vm-abcde/disk", TOKEN, dest)

    serve(source, pull, corrupt=True)
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()
    assert digest(source) == before  # the source is untouched
