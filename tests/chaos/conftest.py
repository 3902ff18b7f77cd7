"""Fixtures of the chaos scenarios: an Env whose API server keeps an audit log."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests import env as kubenova_env


@pytest.fixture
def audited_env(tmp_path: pathlib.Path) -> Iterator[kubenova_env.Env]:
    """Like `env`, and the API server logs who wrote kubenova's objects and leases."""
    with kubenova_env.running(tmp_path, audit=True) as environment:
        yield environment
