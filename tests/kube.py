"""Test helpers that drive a real API server the way a user does: with kubectl."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import time
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
CRDS = REPO / "crds"
SAMPLES = CRDS / "samples"


@dataclasses.dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclasses.dataclass(frozen=True)
class Kubectl:
    kubeconfig: pathlib.Path

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60) -> Result:
        proc = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        """Run kubectl and return stdout; fail the test with stderr on error."""
        result = self.run(*args, stdin=stdin)
        assert result.ok, f"kubectl {' '.join(args)} failed: {result.stderr}"
        return result.stdout

    def apply(self, manifest: dict[str, Any] | str, *extra: str) -> Result:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.run("apply", "-f", "-", *extra, stdin=text)

    def get_json(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json"))

    def wait_until(self, predicate: Any, *, timeout: float = 30.0) -> Any:
        return poll(predicate, timeout=timeout)


def poll(predicate: Any, *, timeout: float, interval: float = 0.2) -> Any:
    """Poll until predicate() returns a truthy value and return it; TimeoutError after
    `timeout` seconds. Tests wait with this, never with bare sleeps."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        time.sleep(interval)


def crd_files() -> list[str]:
    return [arg for path in sorted(CRDS.glob("*.yaml")) for arg in ("-f", str(path))]


def install_crds(kubectl: Kubectl) -> None:
    kubectl("apply", *crd_files())
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *crd_files())
