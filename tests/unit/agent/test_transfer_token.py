"""Transfer tokens: derived from the shared key and the Migration's uid, on both nodes."""

from __future__ import annotations

import pathlib
import stat

import pytest

from kubenova.agent import transfer


def test_both_nodes_derive_the_same_token_and_each_migration_its_own() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    source, dest = transfer.token(key, "uid-1"), transfer.token(key, "uid-1")
    assert source == dest
    assert transfer.token(key, "uid-2") != source
    assert transfer.token(b"another key" * 3, "uid-1") != source
    assert len(source) == 64  # hex of HMAC-SHA256


def test_no_key_is_a_clear_error() -> None:
    with pytest.raises(transfer.TransferError, match="--transfer-key-file"):
        transfer.token(b"", "uid-1")


def test_key_file_is_random_private_and_kept(tmp_path: pathlib.Path) -> None:
    first = transfer.ensure_key_file(tmp_path / "a" / "transfer.key")
    key = first.read_text()
    assert len(key) == 64
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    assert transfer.ensure_key_file(first).read_text() == key  # kept, not replaced
    assert transfer.ensure_key_file(tmp_path / "b.key").read_text() != key
