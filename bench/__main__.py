"""`make bench`: run every benchmark and write bench/results/<name>.json.

Each benchmark is a module in this package exposing ``run() -> dict``; its name is the module's.
Run one with ``python -m bench NAME``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str]) -> int:
    names = argv or sorted(
        m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_")
    )
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        print(f"bench: {name} ...", flush=True)
        result = importlib.import_module(f"bench.{name}").run()
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
        print(f"bench: {name} -> {out}: {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
