"""The cross-node disk hand-off over real HTTP(S) on loopback: sparse, authenticated,
checksummed; refuses bad requests; a corrupted transfer leaves nothing and loses nothing;
over TLS a destination accepts only a source the transfer CA signed for its node."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import os
import pathlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubenova import pki
from kubenova.agent import certificate, transfer

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
    source: pathlib.Path,
    test: Callable[[str], Awaitable[Any]],
    corrupt: bool = False,
    tls: ssl.SSLContext | None = None,
) -> Any:
    async def lookup(namespace: str, name: str, part: transfer.Part) -> transfer.Offer | None:
        if (namespace, name, part) == ("default", "vm-abcde", transfer.Part.DISK):
            return transfer.Offer(path=source, token=TOKEN)
        return None

    async def main() -> Any:
        runner = web.AppRunner(transfer.app(lookup, corrupt=corrupt))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return await test(f"{'https' if tls else 'http'}://127.0.0.1:{port}")
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def test_sparse_disk_arrives_identical_sending_only_its_data(tmp_path: pathlib.Path) -> None:
    source = sparse_disk(tmp_path / "disk")
    dest = tmp_path / "received"
    resumed, sent = serve(
        source, lambda url: transfer.pull(f"{url}/v1/migrations/default/vm-abcde/disk", TOKEN, dest)
    )
    assert (resumed, sent) == (0, 3 * MIB)  # only the allocated data crossed the wire
    assert dest.stat().st_size == source.stat().st_size
    assert digest(dest) == digest(source)
    assert dest.stat().st_blocks * 512 < 8 * MIB  # still sparse on the receiving side


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/v1/migrations/default/vm-abcde/disk", {}, 401),
        ("/v1/migrations/default/vm-abcde/disk", {"Authorization": "Bearer wrong"}, 401),
        ("/v1/migrations/default/other/disk", {"Authorization": f"Bearer {TOKEN}"}, 404),
        ("/v1/migrations/default/other/disk", {}, 401),  # not even whether it is served
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
    ids=[
        "no-secret",
        "wrong-secret",
        "other-migration",
        "other-migration-no-secret",
        "encoded-traversal",
        "traversal",
    ],
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


def serving_context(authority: pki.Authority, directory: pathlib.Path, node: str) -> ssl.SSLContext:
    """A source's serving context: a certificate for `node`, signed by `authority` as the
    controller's signer signs an approved request."""
    key, request = pki.transfer_request(node)
    cert = pki.sign_request(authority.cert, authority.key, request, datetime.timedelta(hours=1))
    (directory / f"{node}.crt").write_bytes(cert)
    (directory / f"{node}.key").write_bytes(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / f"{node}.crt", directory / f"{node}.key")
    return context


@pytest.fixture
def chart_ca(tmp_path: pathlib.Path) -> pki.Authority:
    return pki.Authority.create(tmp_path, "transfer-ca")


def test_over_tls_a_destination_verifies_the_source_as_its_node(
    tmp_path: pathlib.Path, chart_ca: pki.Authority
) -> None:
    source = sparse_disk(tmp_path / "disk")
    dest = tmp_path / "received"
    verify = certificate.client_context(str(chart_ca.path))

    async def pull(url: str) -> tuple[int, int]:
        disk = f"{url}/v1/migrations/default/vm-abcde/disk"
        return await transfer.pull(disk, TOKEN, dest, tls=verify, node="node-a")

    tls = serving_context(chart_ca, tmp_path, "node-a")
    assert serve(source, pull, tls=tls) == (0, 3 * MIB)
    assert digest(dest) == digest(source)


@pytest.mark.parametrize("case", ["another-ca", "another-node"])
def test_over_tls_a_destination_refuses_a_source_the_ca_did_not_vouch_for(
    tmp_path: pathlib.Path, chart_ca: pki.Authority, case: str
) -> None:
    """A source with a certificate the chart's CA did not sign, or signed for another node
    (the source's endpoint answered by someone else): refused for good, nothing written."""
    source = sparse_disk(tmp_path / "disk")
    dest = tmp_path / "received"
    signer = pki.Authority.create(tmp_path, "other-ca") if case == "another-ca" else chart_ca
    tls = serving_context(signer, tmp_path, "node-a" if case == "another-ca" else "node-b")
    verify = certificate.client_context(str(chart_ca.path))

    async def pull(url: str) -> transfer.TransferError:
        disk = f"{url}/v1/migrations/default/vm-abcde/disk"
        with pytest.raises(transfer.TransferError, match="certificate refused") as refused:
            await transfer.pull(disk, TOKEN, dest, tls=verify, node="node-a")
        return refused.value

    refused = serve(source, pull, tls=tls)
    assert not refused.transient  # retrying would not change who answers
    assert not dest.exists()
    assert not dest.with_name(dest.name + ".part").exists()


def test_over_tls_a_source_still_refuses_a_destination_without_the_token(
    tmp_path: pathlib.Path, chart_ca: pki.Authority
) -> None:
    source = sparse_disk(tmp_path / "disk")
    verify = certificate.client_context(str(chart_ca.path))

    async def request(url: str) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{url}/v1/migrations/default/vm-abcde/disk", ssl=verify, server_hostname="node-a"
            ) as response,
        ):
            return response.status

    assert serve(source, request, tls=serving_context(chart_ca, tmp_path, "node-a")) == 401


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


def serve_cut(source: pathlib.Path, test: Callable[[str], Awaitable[Any]], cut_after: int) -> Any:
    """A source that drops the connection after `cut_after` bytes of the stream, once
    (a reset, or its agent killed mid-stream); later requests are served whole."""
    cuts = [cut_after]

    async def disk(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        sent, limit = 0, cuts.pop() if cuts else None
        async for chunk in transfer.stream(source, int(request.query.get("from", "0"))):
            if limit is not None and sent + len(chunk) > limit:
                await response.write(chunk[: limit - sent])
                # Let the receiver take in what arrived: a connection that breaks makes its
                # reader drop data still buffered, which only moves where it resumes.
                await asyncio.sleep(0.5)
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response

    async def main() -> Any:
        app = web.Application()
        app.router.add_get("/disk", disk)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            return await test(f"http://127.0.0.1:{runner.addresses[0][1]}/disk")
        finally:
            await runner.cleanup()

    return asyncio.run(main())


@pytest.fixture
def small_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """1 MiB frames, progress recorded after each: the 3 MiB test disk is three frames."""
    monkeypatch.setattr(transfer, "FRAME_MAX", MIB)
    monkeypatch.setattr(transfer, "PROGRESS_EVERY", MIB)


def test_a_cut_transfer_resumes_where_its_verified_frames_end(
    tmp_path: pathlib.Path, small_frames: None
) -> None:
    source = sparse_disk(tmp_path / "disk")
    dest = tmp_path / "received"

    async def twice(url: str) -> tuple[int, int]:
        with pytest.raises(transfer.TransferError) as cut:
            await transfer.pull(url, TOKEN, dest)
        assert cut.value.transient
        assert not dest.exists()
        return await transfer.pull(url, TOKEN, dest)

    resumed, sent = serve_cut(source, twice, cut_after=MIB + MIB // 2)
    assert resumed == MIB  # the first frame was verified and recorded before the cut
    assert sent == 2 * MIB  # only what came after it crossed the wire again
    assert digest(dest) == digest(source)
    assert not (tmp_path / "received.part").exists()
    assert not (tmp_path / "received.part.json").exists()


def test_a_source_that_changed_since_the_cut_is_sent_again_whole(
    tmp_path: pathlib.Path, small_frames: None
) -> None:
    source = sparse_disk(tmp_path / "disk")
    dest = tmp_path / "received"

    async def with_change(url: str) -> tuple[int, int]:
        with pytest.raises(transfer.TransferError):
            await transfer.pull(url, TOKEN, dest)
        with source.open("r+b") as f:  # the source disk is not the one the part came from
            f.write(os.urandom(MIB))
        with pytest.raises(transfer.TransferError, match="changed") as changed:
            await transfer.pull(url, TOKEN, dest)
        assert changed.value.transient
        return await transfer.pull(url, TOKEN, dest)

    resumed, sent = serve_cut(source, with_change, cut_after=MIB + MIB // 2)
    assert (resumed, sent) == (0, 3 * MIB)
    assert digest(dest) == digest(source)


def test_a_partial_disk_recorded_before_a_reboot_is_not_trusted(
    tmp_path: pathlib.Path, small_frames: None
) -> None:
    """The record is written without an fsync: after a reboot (another boot id) the data it
    vouches for may be lost with the page cache, so the transfer starts again."""
    source = sparse_disk(tmp_path / "disk")
    dest = tmp_path / "received"

    async def after_reboot(url: str) -> tuple[int, int]:
        with pytest.raises(transfer.TransferError):
            await transfer.pull(url, TOKEN, dest)
        record = tmp_path / "received.part.json"
        saved = json.loads(record.read_text())
        assert saved["verified"] == MIB
        record.write_text(json.dumps({**saved, "boot": "an-earlier-boot"}))
        return await transfer.pull(url, TOKEN, dest)

    resumed, sent = serve_cut(source, after_reboot, cut_after=MIB + MIB // 2)
    assert (resumed, sent) == (0, 3 * MIB)
    assert digest(dest) == digest(source)
