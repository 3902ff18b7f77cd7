"""The API client: no per-request netrc and proxy lookups unless a proxy is configured."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
import yaml

from kubenova.kube import client

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "x",
}


def _trusts_env(path: pathlib.Path) -> bool:
    async def connect() -> bool:
        api = await client.connect(str(path))
        try:
            return bool(api.rest_client.pool_manager._trust_env)
        finally:
            await api.close()

    return asyncio.run(connect())


@pytest.mark.parametrize(("proxy", "trusted"), [(None, False), ("http://proxy:3128", True)])
def test_environment_is_read_only_when_a_proxy_is_set(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, proxy: str | None, trusted: bool
) -> None:
    for name in client.PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    assert _trusts_env(path) is trusted
