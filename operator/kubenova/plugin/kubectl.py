"""Run kubectl with the user's connection flags; turn its failures into one clear line."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from typing import Any

from kubenova.api import names

INSTANCES = f"instances.{names.GROUP}"
MIGRATIONS = f"migrations.{names.GROUP}"
# kubectl's own prefixes: ours ("error: ") replaces them.
_PREFIX = re.compile(r"^(?:error: )?(?:Error from server(?: \([A-Za-z]+\))?: )?", re.MULTILINE)


class Error(Exception):
    """A failure to show the user as `error: <message>` (exit status 1)."""


@dataclasses.dataclass(frozen=True)
class Kubectl:
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None

    def argv(self, *args: str) -> list[str]:
        flags = [
            *([f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []),
            *([f"--context={self.context}"] if self.context else []),
            *([f"--namespace={self.namespace}"] if self.namespace else []),
        ]
        return ["kubectl", *flags, *args]

    def run(self, *args: str) -> str:
        try:
            proc = subprocess.run(
                self.argv(*args), capture_output=True, text=True, check=False, timeout=60
            )
        except FileNotFoundError:
            raise Error("kubectl is not on PATH") from None
        if proc.returncode != 0:
            raise Error(server_message(proc.stderr))
        return proc.stdout

    def get_json(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json"))

    def instance(self, name: str) -> dict[str, Any]:
        try:
            return self.get_json(INSTANCES, name)  # type: ignore[no-any-return]
        except Error as exc:
            if "NotFound" in str(exc) or "not found" in str(exc):
                where = f'namespace "{self.namespace}"' if self.namespace else "this namespace"
                raise Error(
                    f'instance "{name}" not found in {where} (kubectl nova list shows them)'
                ) from None
            raise

    def migrations_of(self, name: str | None, *, all_namespaces: bool = False) -> list[Any]:
        selector = [f"--selector={names.LABEL_INSTANCE}={name}"] if name else []
        scope = ["--all-namespaces"] if all_namespaces else []
        return self.get_json(MIGRATIONS, *selector, *scope)["items"]  # type: ignore[no-any-return]


def server_message(stderr: str) -> str:
    """kubectl's stderr without its 'error: Error from server (Reason):' prefix: the API
    server's (or the webhook's, or a CEL rule's) own words are the message."""
    return _PREFIX.sub("", stderr.strip()) or "kubectl failed"
