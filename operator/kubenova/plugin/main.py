"""kubectl nova: resize, migrate, confirm, revert, list and migrations.

    kubectl nova resize NAME --flavor FLAVOR [--wait]   openstack server resize --flavor
    kubectl nova migrate NAME [--to NODE] [--wait]      openstack server migrate [--host]
    kubectl nova confirm NAME [--wait]                  openstack server resize confirm
    kubectl nova revert NAME [--wait]                   openstack server resize revert
    kubectl nova list [-A]                              openstack server list
    kubectl nova migrations [NAME] [-A]                 nova migration-list [--instance-uuid]

-n/--namespace, --kubeconfig and --context work as with kubectl (kubectl hands a plugin
every argument, so the plugin reads them itself and passes them on).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from kubenova.api import names
from kubenova.plugin import kubectl, view, wait

Kubectl = kubectl.Kubectl


def resize(k: Kubectl, args: argparse.Namespace) -> int:
    inst = k.instance(args.name)
    status = inst.get("status", {})
    _check_movable(args.name, status)
    current = (status.get("flavor") or {}).get("name")
    if args.flavor == current:
        raise kubectl.Error(f"instance {args.name} already has flavor {current}: pick another")
    before = {m["metadata"]["name"] for m in k.migrations_of(args.name)}
    patched = json.loads(
        k.run(
            "patch",
            kubectl.INSTANCES,
            args.name,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"flavor": args.flavor}}),
            "-o",
            "json",
        )
    )
    print(f"instance/{args.name}: resizing {current} -> {args.flavor}")
    if not args.wait:
        return 0
    request = wait.Request(
        name=args.name, before=before, generation=patched["metadata"]["generation"]
    )
    return wait.until_verify(k, request, timeout=args.timeout)


def migrate(k: Kubectl, args: argparse.Namespace) -> int:
    inst = k.instance(args.name)
    _check_movable(args.name, inst.get("status", {}))
    before = {m["metadata"]["name"] for m in k.migrations_of(args.name)}
    k.run(
        "annotate",
        "--overwrite",
        kubectl.INSTANCES,
        args.name,
        f"{names.ANNOTATION_MIGRATE}={args.to or ''}",
    )
    node, to = inst.get("status", {}).get("node"), args.to or "a node the scheduler picks"
    print(f"instance/{args.name}: migrating from {node} to {to}")
    if not args.wait:
        return 0
    request = wait.Request(name=args.name, before=before, migrate=True)
    return wait.until_verify(k, request, timeout=args.timeout)


def confirm(k: Kubectl, args: argparse.Namespace) -> int:
    return _finish(k, args, names.ResizeAction.CONFIRM)


def revert(k: Kubectl, args: argparse.Namespace) -> int:
    return _finish(k, args, names.ResizeAction.REVERT)


def _finish(k: Kubectl, args: argparse.Namespace, action: names.ResizeAction) -> int:
    inst = k.instance(args.name)
    status = inst.get("status", {})
    phase, task = status.get("phase"), status.get("taskState")
    if phase != "VERIFY_RESIZE" or task:
        raise kubectl.Error(view.not_verifying(args.name, phase, task, action.value))
    migration = status.get("migrationRef")
    k.run(
        "annotate",
        "--overwrite",
        kubectl.INSTANCES,
        args.name,
        f"{names.ANNOTATION_RESIZE}={action.value}",
    )
    verb = "confirming" if action is names.ResizeAction.CONFIRM else "reverting"
    print(f"instance/{args.name}: {verb} migration {migration}")
    if not args.wait:
        return 0
    return wait.until_finished(k, args.name, migration, timeout=args.timeout)


def _check_movable(name: str, status: dict[str, Any]) -> None:
    problem = view.cannot_move(name, status.get("phase"), status.get("taskState"))
    if problem:
        raise kubectl.Error(problem)


def list_instances(k: Kubectl, args: argparse.Namespace) -> int:
    scope = ["--all-namespaces"] if args.all_namespaces else []
    items = view.by_creation(k.get_json(kubectl.INSTANCES, *scope)["items"])
    _print_table(items, view.INSTANCE_COLUMNS, args.all_namespaces, "No instances found.")
    return 0


def list_migrations(k: Kubectl, args: argparse.Namespace) -> int:
    items = k.migrations_of(args.name, all_namespaces=args.all_namespaces)
    if args.name and not items:
        k.instance(args.name)  # says so if the instance does not exist either
    items = view.by_creation(items)
    _print_table(items, view.MIGRATION_COLUMNS, args.all_namespaces, "No migrations found.")
    return 0


def _print_table(
    items: list[dict[str, Any]], columns: Sequence[view.Column], namespace: bool, empty: str
) -> None:
    headers, cells = view.rows(items, columns, namespace=namespace)
    print(view.table(headers, cells) if cells else empty)


def _connection_flags() -> argparse.ArgumentParser:
    """Accepted before or after the command, as kubectl accepts them."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS)
    common.add_argument("--context", default=argparse.SUPPRESS)
    return common


def parser() -> argparse.ArgumentParser:
    common = _connection_flags()
    top = argparse.ArgumentParser(
        prog="kubectl nova", description=__doc__.splitlines()[0], parents=[common]
    )
    sub = top.add_subparsers(dest="command", required=True)

    def command(name: str, run: Any, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[common])
        p.set_defaults(run=run)
        return p

    def waiting(p: argparse.ArgumentParser, until: str) -> None:
        p.add_argument("--wait", action="store_true", help=f"wait until {until}")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits")

    p = command("resize", resize, "change the flavor (openstack server resize)")
    p.add_argument("name")
    p.add_argument("--flavor", required=True)
    waiting(p, "VERIFY_RESIZE")
    p = command("migrate", migrate, "cold migrate to another node (openstack server migrate)")
    p.add_argument("name")
    p.add_argument("--to", metavar="NODE", help="the destination (default: the scheduler picks)")
    waiting(p, "VERIFY_RESIZE")
    p = command("confirm", confirm, "keep the resized instance (openstack server resize confirm)")
    p.add_argument("name")
    waiting(p, "ACTIVE/SHUTOFF again")
    p = command("revert", revert, "go back to the old flavor and node (server resize revert)")
    p.add_argument("name")
    waiting(p, "ACTIVE/SHUTOFF again")
    for name, run, text in (
        ("list", list_instances, "instances: flavor, status, task, node, power"),
        ("migrations", list_migrations, "resizes and migrations (nova migration-list)"),
    ):
        p = command(name, run, text)
        if name == "migrations":
            p.add_argument("name", nargs="?", help="only this instance's migrations")
        p.add_argument("-A", "--all-namespaces", action="store_true")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    k = Kubectl(
        kubeconfig=getattr(args, "kubeconfig", None),
        context=getattr(args, "context", None),
        namespace=getattr(args, "namespace", None),
    )
    try:
        return int(args.run(k, args))
    except kubectl.Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
