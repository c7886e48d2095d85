"""The container's entrypoint and health check: ``python -m workspace_sync [run|health|sync-now]``.

``run`` validates the configuration, pulls the workspace, then syncs until SIGTERM and flushes.
Exit codes: 0 stopped cleanly with everything in S3; 1 the initial pull or the final flush failed;
2 the configuration is invalid. SIGUSR1 (or ``sync-now``) asks for an immediate remote pull.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .agent import InitialSyncError, SyncAgent
from .config import ConfigError, SyncConfig
from .counters import check_health
from .credentials import VendingError, vended_session

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def make_client(config: SyncConfig) -> Any:
    """An S3 client sized for the worker pool, on vended credentials scoped to this workspace when the
    task definition names the vending function; AWS_ENDPOINT_URL(_S3) is honoured by boto3 itself."""
    session = boto3.Session()
    if config.credentials_function:
        session, granted = vended_session(config.credentials_function)
        if granted.rstrip("/") != config.prefix:
            raise VendingError(f"credentials are for {granted!r}, not WORKSPACE_PREFIX {config.prefix!r}")
    return session.client(
        "s3",
        config=Config(
            retries={"mode": "standard", "max_attempts": 6},
            max_pool_connections=config.concurrency + 8,
            connect_timeout=5,
            read_timeout=60,
            tcp_keepalive=True,
        ),
    )


def run(env: Mapping[str, str], logger: Logger, client: Any = None) -> int:
    try:
        config = SyncConfig.from_env(env)
    except ConfigError as error:
        logger.error(str(error))
        return EXIT_CONFIG
    logger.append_keys(session_id=config.session_id, bucket=config.bucket, prefix=config.prefix)
    try:
        client = client or make_client(config)
    except (VendingError, ClientError, BotoCoreError) as error:
        logger.error("no workspace credentials; the session cannot start", extra={"error": str(error)})
        return EXIT_FAILED
    agent = SyncAgent(config, client, logger)
    signal.signal(signal.SIGTERM, lambda *_: agent.request_stop())
    signal.signal(signal.SIGINT, lambda *_: agent.request_stop())
    signal.signal(signal.SIGUSR1, lambda *_: agent.request_poll())
    logger.info("pulling workspace", extra={"workspace": str(config.workspace_dir)})
    try:
        agent.start()
    except (InitialSyncError, ClientError, BotoCoreError, OSError) as error:
        logger.error("initial pull failed; the session cannot start", extra={"error": str(error)})
        agent.close()
        return EXIT_FAILED
    return agent.run()


def health(env: Mapping[str, str]) -> int:
    try:
        config = SyncConfig.from_env(env)
    except ConfigError as error:
        print(f"unhealthy: {error}")
        return EXIT_FAILED
    healthy, message = check_health(config.status_file, config.health_max_age_seconds)
    print(message if healthy else f"unhealthy: {message}")
    return EXIT_OK if healthy else EXIT_FAILED


def sync_now(env: Mapping[str, str]) -> int:
    try:
        config = SyncConfig.from_env(env)
        pid = int(json.loads(config.status_file.read_text(encoding="utf-8"))["pid"])
        os.kill(pid, signal.SIGUSR1)
    except (ConfigError, OSError, ValueError, KeyError) as error:
        print(f"cannot reach the sync agent: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workspace_sync", description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run", choices=["run", "health", "sync-now"])
    args = parser.parse_args(argv)
    if args.command == "health":
        return health(os.environ)
    if args.command == "sync-now":
        return sync_now(os.environ)
    logger = Logger(service="workspace-sync", level=os.environ.get("LOG_LEVEL", "INFO"))
    return run(os.environ, logger)
