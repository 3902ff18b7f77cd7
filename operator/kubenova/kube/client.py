"""Connecting to the API server (kubeconfig or in-cluster service account)."""

from __future__ import annotations

from kubernetes_asyncio import client, config


async def connect(kubeconfig: str | None, *, qps_connections: int = 64) -> client.ApiClient:
    """An ApiClient for `kubeconfig`, or for the pod's service account when None."""
    configuration = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # aiohttp's default pool (100) is fine for one node; the fleet benchmark runs many
    # agents in one process and needs the limit explicit.
    configuration.connection_pool_maxsize = qps_connections
    return client.ApiClient(configuration)
