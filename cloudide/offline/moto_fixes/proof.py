"""Run every correction's probe on plain moto and on corrected moto, each side in its own interpreter.

A probe proves its correction when it fails on plain moto (moto still does what the entry says) and
passes once the corrections are installed (the patch makes moto answer as AWS). The two sides cannot
share a process: the corrections patch moto's classes for good. Each side runs in a fresh interpreter
(`python -m cloudide.offline.moto_fixes.proof plain|corrected [names]`), every probe in its own
`mock_aws`, and prints one JSON object: name -> null (passed) or the failure. Without arguments the
module prints `summary()`, the figures the fidelity bench reports.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

SIDES = ("plain", "corrected")


@dataclass(frozen=True)
class ProbeResult:
    """What one probe saw on each side: None where it passed, else how it failed."""

    name: str
    plain: str | None
    corrected: str | None

    @property
    def proven(self) -> bool:
        """The correction is needed (plain moto fails the probe) and works (corrected moto passes it)."""
        return self.plain is not None and self.corrected is None


def run_probes(names: Iterable[str] | None = None, timeout: float = 300.0) -> dict[str, ProbeResult]:
    """Every probe's result (or those of `names`), keyed by correction name, in `CORRECTIONS` order."""
    from cloudide.offline.moto_fixes import CORRECTIONS

    wanted = list(names) if names is not None else [c.name for c in CORRECTIONS]
    unknown = set(wanted) - {c.name for c in CORRECTIONS}
    if unknown:
        raise ValueError(f"no correction named {sorted(unknown)}")
    with ThreadPoolExecutor(len(SIDES)) as pool:
        plain, corrected = pool.map(lambda side: _run_side(side, wanted, timeout), SIDES)
    return {name: ProbeResult(name, plain[name], corrected[name]) for name in wanted}


def _run_side(side: str, names: list[str], timeout: float) -> dict[str, str | None]:
    """One side's results; a side that crashes or hangs raises, so it never counts as failed probes."""
    command = [sys.executable, "-m", "cloudide.offline.moto_fixes.proof", side, *names]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {side} probes exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    results: dict[str, str | None] = json.loads(lines[-1])
    return results


def _probe_here(side: str, names: list[str]) -> dict[str, str | None]:
    """Run the probes in this interpreter, on `side`; never call it where other tests run."""
    from moto import mock_aws

    from cloudide.offline import moto_fixes
    from cloudide.offline.moto_fixes.probing import SFN_CONFIG

    by_name = {c.name: c for c in moto_fixes.CORRECTIONS}
    results: dict[str, str | None] = {}
    for name in names:
        with mock_aws(config=SFN_CONFIG):
            if side == "corrected":
                moto_fixes.install()
            try:
                by_name[name].probe()
                results[name] = None
            except Exception as error:
                results[name] = f"{type(error).__name__}: {error}"[:1000]
    return results


def summary() -> dict[str, object]:
    """The figures the fidelity bench reports: how many corrections, how many proven by their probe."""
    results = run_probes()
    return {
        "corrections": len(results),
        "corrections_with_probe": sum(result.proven for result in results.values()),
        "unproven": {name: [r.plain, r.corrected] for name, r in results.items() if not r.proven},
    }


def main(argv: list[str]) -> None:
    """No argument: print `summary()`. `plain|corrected [name ...]`: run probes here (one side)."""
    if not argv:
        print(json.dumps(summary(), indent=2))
        return
    side, names = argv[0], argv[1:]
    if side not in SIDES:
        raise SystemExit(f"usage: python -m cloudide.offline.moto_fixes.proof [{'|'.join(SIDES)} name ...]")
    logging.disable(logging.CRITICAL)
    print(json.dumps(_probe_here(side, names)), flush=True)
    # A probe on plain moto may leave an execution waiting forever on a non-daemon thread.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
