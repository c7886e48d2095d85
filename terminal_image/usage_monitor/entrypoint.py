"""``python -m usage_monitor``: observe the terminal's use and report it until SIGTERM (then exit 0).

Runs as its own uid (not the user's), so the user's shell can read neither its memory nor its
environment, which holds the task role's credential endpoint. Exit codes: 0 stopped; 2 the
configuration is invalid.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config

from .config import ConfigError, MonitorConfig
from .control_plane import ControlPlane
from .cpu import CpuLedger
from .monitor import Monitor
from .tmux import TmuxProbe

EXIT_OK = 0
EXIT_CONFIG = 2


def main() -> int:
    logger = Logger(service="usage-monitor", level=os.environ.get("LOG_LEVEL", "INFO"))
    try:
        config = MonitorConfig.from_env(os.environ)
    except ConfigError as error:
        logger.error(str(error))
        return EXIT_CONFIG
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # The task's own credentials (boto3's default chain); AWS_ENDPOINT_URL is honoured by boto3 itself.
    session = boto3.Session()
    lambda_client = session.client(
        "lambda",
        config=Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20),
    )
    probe = TmuxProbe(
        config.tmux_socket,
        config.tmux_session,
        uid=config.uid,
        gid=config.gid,
        tmux=shutil.which("tmux") or "/usr/bin/tmux",
        setpriv=shutil.which("setpriv") or "/usr/bin/setpriv",
    )
    control_plane = ControlPlane(
        config.report_function,
        lambda_client=lambda_client,
        sts_client=session.client("sts"),
        rate=config.time_rate,
    )
    monitor = Monitor(
        config, probe=probe, ledger=CpuLedger(config.uid), control_plane=control_plane, logger=logger
    )
    logger.info("usage monitor started", extra={"uid": os.geteuid(), "watching_uid": config.uid,
                                                "poll_seconds": config.poll_seconds})  # fmt: skip
    monitor.run(stop)
    logger.info("usage monitor stopped")
    return EXIT_OK
