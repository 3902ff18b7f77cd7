"""The informer against a scripted source: relists replace the cache (deletions during a
watch gap are reported), 410 Gone relists at once, a silent connection is given up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kubenova.kube import informer, objects
from tests import builders


def flavor(name: str, version: int) -> dict[str, Any]:
    body = builders.flavor(name)
    body["metadata"]["resourceVersion"] = str(version)
    return body


class Scripted:
    """Lists what `items` holds now; each watch plays the next script, then stalls or
    raises as told."""

    def __init__(self, items: dict[str, dict[str, Any]]) -> None:
        self.items = items
        self.lists = 0
        self.scripts: list[tuple[list[dict[str, Any]], BaseException | None]] = []
        self.watched_from: list[str] = []
        self.on_end: Any = lambda: None  # the server's changes while the connection is down

    async def list(self) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        versions = [int(b["metadata"]["resourceVersion"]) for b in self.items.values()]
        return list(self.items.values()), str(max(versions, default=1))

    @contextlib.asynccontextmanager
    async def watch(self, version: str, timeout: int) -> AsyncIterator[AsyncIterator[Any]]:
        self.watched_from.append(version)
        events, end = self.scripts.pop(0) if self.scripts else ([], None)

        async def play() -> AsyncIterator[dict[str, Any]]:
            for event in events:
                yield event
            if end is not None:
                self.on_end()
                raise end
            await asyncio.Event().wait()  # a half-open connection: nothing, ever

        yield play()


def run_until(inf: informer.Informer, done: Any, timeout: float = 5.0) -> None:
    async def main() -> None:
        task = asyncio.create_task(inf.run())
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(main())


def test_a_410_relists_at_once_and_reports_what_was_deleted_in_the_gap() -> None:
    source = Scripted({"a": flavor("a", 1), "b": flavor("b", 2)})
    changes: list[tuple[str, bool]] = []
    inf = informer.Informer(
        None, objects.FLAVOR, "", lambda k, b: changes.append((k, b is not None)), source=source
    )

    gone = ApiException(status=410, reason="Expired: too old resource version")
    # The watch sees one change, then the connection drops for long enough that the server
    # compacts: meanwhile a is deleted and c created; the resumed watch gets 410.
    source.scripts = [([{"type": "MODIFIED", "raw_object": flavor("b", 3)}], gone)]
    source.on_end = lambda: setattr(source, "items", {"b": flavor("b", 3), "c": flavor("c", 5)})

    run_until(inf, lambda: source.lists >= 2)
    assert ("a", False) in changes, "the deletion during the gap was reported"
    assert set(inf.cache) == {"b", "c"}
    assert inf.cache["b"]["metadata"]["resourceVersion"] == "3"
    assert changes.count(("b", True)) == 2, "b: listed, then its watch event; not relisted"


def test_a_watch_resumes_from_the_last_version_it_saw() -> None:
    source = Scripted({"a": flavor("a", 1)})
    inf = informer.Informer(None, objects.FLAVOR, "", lambda k, b: None, source=source)
    bookmark = {"type": "BOOKMARK", "raw_object": {"metadata": {"resourceVersion": "9"}}}
    source.scripts = [
        ([{"type": "ADDED", "raw_object": flavor("b", 4)}], StopAsyncIteration()),
        ([bookmark], StopAsyncIteration()),
    ]
    # StopAsyncIteration raised inside an async generator becomes a RuntimeError: a failure.
    run_until(inf, lambda: len(source.watched_from) >= 2)
    assert source.watched_from[0] == "1"
    assert "b" in inf.cache


def test_a_silent_watch_is_given_up_and_the_informer_relists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(informer, "WATCH_TIMEOUT", 0)
    monkeypatch.setattr(informer, "CLIENT_GRACE", 0.05)
    monkeypatch.setattr(informer, "ERROR_BACKOFF", (0.01,))
    source = Scripted({"a": flavor("a", 1)})
    inf = informer.Informer(None, objects.FLAVOR, "", lambda k, b: None, source=source)
    run_until(inf, lambda: source.lists >= 3)
    assert source.lists >= 3


def test_a_resync_beside_the_watch_keeps_what_the_watch_delivered_after_the_list() -> None:
    source = Scripted({"a": flavor("a", 1)})
    deleted: list[str] = []
    inf = informer.Informer(
        None,
        objects.FLAVOR,
        "",
        lambda k, b: deleted.append(k) if b is None else None,
        source=source,
    )
    asyncio.run(inf.resync())
    # A create at revision 7 arrives by watch while a list answered at revision 1 is read.
    inf._handle({"type": "ADDED", "raw_object": flavor("late", 7)})
    asyncio.run(inf.resync())
    assert "late" in inf.cache
    assert deleted == []
