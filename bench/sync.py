"""Workspace sync against `aws s3 sync`, both on the same moto S3 server in the same run.

Keys: pull_seconds / pull_seconds_awscli (5,000 files, 200 MB into an empty directory),
push_seconds / push_seconds_awscli (500 changed files), change_latency_p50_s / _p95_s (one saved
file until its object is in S3), flush_1000_seconds (SIGTERM-style stop with 1,000 small files pending).
awscli lives in a throwaway venv under /tmp so it cannot disturb the project's botocore pin.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from workspace_sync.agent import SyncAgent
from workspace_sync.config import SyncConfig
from workspace_sync.entrypoint import make_client

FILES = 5_000
TOTAL_BYTES = 200 * 1024 * 1024
CHANGED = 500
LATENCY_SAMPLES = 30
FLUSH_FILES = 1_000
AWSCLI_VENV = Path(tempfile.gettempdir()) / "cloudide-bench-awscli"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _awscli() -> Path:
    aws = AWSCLI_VENV / "bin" / "aws"
    if not aws.exists():
        subprocess.run([sys.executable, "-m", "venv", str(AWSCLI_VENV)], check=True, timeout=120)
        subprocess.run([str(AWSCLI_VENV / "bin" / "pip"), "install", "-q", "awscli"], check=True, timeout=600)
    return aws


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("moto server did not start")
        time.sleep(0.1)


def _seed(s3: Any, bucket: str, prefix: str) -> None:
    size = TOTAL_BYTES // FILES

    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/d{i % 50}/sub{i % 7}/f{i}.dat", Body=os.urandom(size))

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(put, range(FILES)))


def _agent(endpoint: str, bucket: str, prefix: str, workspace: Path, **extra: str) -> SyncAgent:
    env = {
        "WORKSPACE_BUCKET": bucket,
        "WORKSPACE_PREFIX": prefix,
        "SESSION_ID": "bench",
        "WORKSPACE_DIR": str(workspace),
        "SYNC_POLL_SECONDS": "5",
        **extra,
    }
    config = SyncConfig.from_env(env)
    # The agent's own client (retries, pool, timeouts) as it ships, pointed at the bench's S3.
    bench_s3 = {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with mock.patch.dict(os.environ, bench_s3):
        client = make_client(config)
    return SyncAgent(config, client, Logger(service="bench", level="WARNING"))


def _change(root: Path, count: int) -> list[Path]:
    paths = sorted(root.rglob("*.dat"))[:count]
    for path in paths:
        path.write_bytes(os.urandom(path.stat().st_size + 1))
    return paths


def run() -> dict[str, float]:
    aws = _awscli()
    port = _free_port()
    # Its own process, so neither client shares a GIL with the server.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(max_pool_connections=40),
        )
        _wait_for(lambda: _reachable(port), 30)
        s3.create_bucket(Bucket="bench")
        _seed(s3, "bench", "tree")
        cli_env = {**os.environ, **CREDENTIALS}
        cli = [str(aws), "--endpoint-url", endpoint, "s3", "sync", "--only-show-errors"]

        # Pull: the agent, then awscli, each into an empty directory.
        agent = _agent(endpoint, "bench", "tree", work / "agent")
        started = time.perf_counter()
        agent.start()
        pull_seconds = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([*cli, "s3://bench/tree", str(work / "cli")], env=cli_env, check=True, timeout=900)
        pull_awscli = time.perf_counter() - started

        # Push: 500 changed files, from the running agent's notifications until all are in S3.
        loop = threading.Thread(target=agent.run, daemon=True)
        loop.start()
        time.sleep(1.0)  # let the events of the pull itself drain
        before = agent.counters.files_up
        started = time.perf_counter()
        _change(work / "agent", CHANGED)
        while agent.counters.files_up < before + CHANGED:
            time.sleep(0.005)
        push_seconds = time.perf_counter() - started

        # Change latency: one saved file until its object exists.
        latencies = []
        for i in range(LATENCY_SAMPLES):
            path = work / "agent" / f"latency-{i}.txt"
            started = time.perf_counter()
            path.write_text(f"saved {i}\n")
            while True:
                try:
                    s3.head_object(Bucket="bench", Key=f"tree/latency-{i}.txt")
                    break
                except s3.exceptions.ClientError:
                    time.sleep(0.005)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)
        agent.request_stop()
        loop.join(120)

        # awscli's push: the same 500-file change, from its copy of the tree to the same prefix.
        _change(work / "cli", CHANGED)
        started = time.perf_counter()
        subprocess.run([*cli, str(work / "cli"), "s3://bench/tree"], env=cli_env, check=True, timeout=900)
        push_awscli = time.perf_counter() - started

        # Flush: 1,000 small files written with debouncing long enough that all are pending at stop.
        flusher = _agent(
            endpoint,
            "bench",
            "flush",
            work / "flush",
            SYNC_DEBOUNCE_SECONDS="60",
            SYNC_MAX_DELAY_SECONDS="60",
        )
        flusher.start()
        loop = threading.Thread(target=flusher.run, daemon=True)
        loop.start()
        for i in range(FLUSH_FILES):
            (work / "flush" / f"f{i}.txt").write_text(f"pending {i}\n")
        time.sleep(0.5)
        started = time.perf_counter()
        flusher.request_stop()
        loop.join(120)
        flush_seconds = time.perf_counter() - started
        flushed = sum(
            1
            for _ in s3.get_paginator("list_objects_v2")
            .paginate(Bucket="bench", Prefix="flush/")
            .search("Contents")
        )
        if flushed != FLUSH_FILES:
            raise RuntimeError(f"flush left {FLUSH_FILES - flushed} files out of S3")
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    quantiles = statistics.quantiles(latencies, n=20)
    return {
        "pull_seconds": round(pull_seconds, 3),
        "pull_seconds_awscli": round(pull_awscli, 3),
        "push_seconds": round(push_seconds, 3),
        "push_seconds_awscli": round(push_awscli, 3),
        "change_latency_p50_s": round(statistics.median(latencies), 3),
        "change_latency_p95_s": round(quantiles[18], 3),
        "flush_1000_seconds": round(flush_seconds, 3),
    }
