"""The monitor's configuration, parsed once from the environment the task definition sets.

The same names as the shell wrapper's (`CLOUDIDE_UID`, `CLOUDIDE_TMUX_SOCKET`, ...) so both agree on
whose tmux server to watch; nothing deeper in the package reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and what is expected."""


@dataclass(frozen=True)
class MonitorConfig:
    report_function: str
    poll_seconds: float = 10.0
    # Busy = at least this share of one CPU over a sample: an idle shell costs ~0, a build far more.
    work_cpu_fraction: float = 0.05
    uid: int = 1000
    gid: int = 1000
    tmux_socket: str = "/tmp/cloudide-tmux/default"
    tmux_session: str = "main"
    # Control-plane seconds per second of this task's clock: 1, except on the local stack's
    # compressed clock (`cloudide local --time-scale`).
    time_rate: float = 1.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MonitorConfig:
        """Build the configuration, collecting every problem so one run shows them all."""
        problems: list[str] = []

        def number(name: str, default: float, low: float, high: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number")
                return default
            if not low < value <= high:
                problems.append(f"{name}={raw!r} must be above {low:g} and at most {high:g}")
            return value

        def ident(name: str) -> int:
            raw = env.get(name, "").strip() or "1000"
            if not raw.isascii() or not raw.isdigit():
                problems.append(f"{name}={raw!r} must be a numeric id")
                return 1000
            return int(raw)

        function = env.get("USAGE_REPORT_FUNCTION", "").strip()
        if not function:
            problems.append("USAGE_REPORT_FUNCTION is not set (the control plane's usage function)")
        socket = env.get("CLOUDIDE_TMUX_SOCKET", "").strip() or cls.tmux_socket
        if not socket.startswith("/"):
            problems.append(f"CLOUDIDE_TMUX_SOCKET={socket!r} must be an absolute path")
        config = cls(
            report_function=function,
            poll_seconds=number("USAGE_POLL_SECONDS", cls.poll_seconds, 0.0, 3600.0),
            work_cpu_fraction=number("USAGE_WORK_CPU_FRACTION", cls.work_cpu_fraction, 0.0, 64.0),
            uid=ident("CLOUDIDE_UID"),
            gid=ident("CLOUDIDE_GID"),
            tmux_socket=socket,
            tmux_session=env.get("CLOUDIDE_TMUX_SESSION", "").strip() or cls.tmux_session,
            time_rate=number("CLOUDIDE_TIME_RATE", cls.time_rate, 0.0, 10_000.0),
        )
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return config
