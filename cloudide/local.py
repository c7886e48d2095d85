"""`cloudide local`: the whole system on this machine, no AWS account and no Docker needed.

The command is a thin shell around :class:`cloudide.localstack.stack.LocalStack`: it parses options,
prints the stack's progress and a summary of where everything listens, and turns Ctrl-C (or SIGTERM)
into an orderly shutdown that stops every task and flushes its workspace to the local S3.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from cloudide.localstack.sandbox import SandboxHost
from cloudide.localstack.stack import STACK_NAME, LocalStack, LocalStackConfig

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``cloudide local [--host H] [--api-port P] [--gateway-port P] [--state-dir DIR] [--persist]
    [--unsandboxed]``."""
    parser = subparsers.add_parser(
        "local",
        help="run the whole system on this machine (local AWS, REST API, sandboxed terminals, page)",
        description="Deploy template.yaml into a local AWS (moto) and serve the REST API, sandboxed "
        "terminal tasks and the browser page on this machine. Ctrl-C stops everything.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--api-port",
        type=int,
        default=int(os.environ.get("CLOUDIDE_API_PORT", "3000")),
        help="REST API port [$CLOUDIDE_API_PORT] (default: %(default)s)",
    )
    parser.add_argument(
        "--gateway-port",
        type=int,
        default=int(os.environ.get("CLOUDIDE_GATEWAY_PORT", "8080")),
        help="page port [$CLOUDIDE_GATEWAY_PORT] (default: %(default)s)",
    )
    parser.add_argument(
        "--aws-port", type=int, default=0, help="local AWS endpoint port (default: any free port)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".local-state"),
        help="task sandboxes, stack.json and persisted state live here (default: %(default)s)",
    )
    parser.add_argument(
        "--persist",
        action="store_true",
        help="keep workspaces (the local S3) and session history across restarts, in STATE_DIR/persist",
    )
    parser.add_argument(
        "--unsandboxed",
        action="store_true",
        help="run terminals as plain processes when bubblewrap is unavailable: no isolation between users",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a template parameter override, e.g. DefaultIdleTimeoutMinutes=5 (repeatable)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="run the control plane's timers this much faster, e.g. 0.05 makes a 1-minute idle timeout "
        "pass in 3 s (for tests and demos; default: real time)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="log every component, and the functions' logs, at INFO"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Functions that publish no metric on an invocation make Powertools warn; on AWS that goes to their logs.
    warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)
    for noisy in ("werkzeug", "botocore", "moto"):
        logging.getLogger(noisy).setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    if not 0 < args.time_scale <= 1:
        print("cloudide local: --time-scale must be in (0, 1]", file=sys.stderr)
        return 2
    missing = SandboxHost.missing()
    if missing and not args.unsandboxed:
        print(
            f"cloudide local: refusing to start: terminals run in bubblewrap sandboxes, and {missing}.\n"
            "  Install bubblewrap (apt-get install bubblewrap) and run as root, or pass --unsandboxed to "
            "run each terminal as a plain process on this machine, with no isolation between users.",
            file=sys.stderr,
        )
        return 2
    try:
        parameters = tuple(_parameter(text) for text in args.parameter)
    except ValueError as error:
        print(f"cloudide local: --parameter: {error}", file=sys.stderr)
        return 2
    config = LocalStackConfig(
        host=args.host,
        api_port=args.api_port,
        gateway_port=args.gateway_port,
        aws_port=args.aws_port,
        state_dir=args.state_dir,
        persist=args.persist,
        unsandboxed=args.unsandboxed,
        parameters=parameters,
        time_scale=args.time_scale,
        verbose=args.verbose,
    )
    try:
        asyncio.run(serve(config))
    except OSError as error:  # typically a port is taken
        print(f"cloudide local: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # a bad parameter, refused by the template translation
        print(f"cloudide local: {error}", file=sys.stderr)
        return 2
    return 0


def _parameter(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    return key, value


async def serve(config: LocalStackConfig) -> None:
    """Run the stack until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with LocalStack(config, progress=say) as stack:
        assert stack.endpoints is not None
        endpoints = stack.endpoints
        say("")
        say("ready")
        say(f"  page:       {endpoints.gateway}/#token=local:me")
        say(f"  REST API:   {endpoints.api}   (Authorization: Bearer local:<user-id>)")
        say(f"  local AWS:  {endpoints.aws}   (stack {STACK_NAME}; `cloudide sessions --local`)")
        say(f"  try:        curl -s -X POST {endpoints.api}/sessions -H 'Authorization: Bearer local:me' \\")
        say("                 -H 'Content-Type: application/json' -d '{\"projectId\": \"demo\"}'")
        say("Ctrl-C stops everything; each task's workspace is flushed to the local S3 first.")
        await stop.wait()
        say("stopping ...")
    say("stopped")


def say(line: str) -> None:
    print(f"cloudide local: {line}" if line else "", flush=True)
