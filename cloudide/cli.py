"""`cloudide`: the one command-line entry point; each sub-command lives in the module it drives."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cloudide.deployment import OperatorError

# Sub-command modules; each exposes ``register(subparsers)`` which adds its parser and sets
# ``func`` (a callable taking the parsed namespace and returning an exit code).
COMMAND_MODULES: tuple[str, ...] = (
    "cloudide.attach",
    "cloudide.local",
    "cloudide.transport.gateway",
    "cloudide.setup",
    "cloudide.operate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudide", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OperatorError as error:
        # A problem the operator can fix: the message says how; a traceback would only bury it.
        print(f"cloudide {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
