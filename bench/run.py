"""`make bench`: run every bench/bench_*.py in turn and show their tables.

Each script measures its own baseline in the same run and prints ratios
against it; absolute times are not comparable across runs or machines.
Run one script alone with `.venv/bin/python bench/bench_NAME.py`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = set(sys.argv[1:])
    failures = 0
    for script in sorted(HERE.glob("bench_*.py")):
        if wanted and script.stem.removeprefix("bench_") not in wanted:
            continue
        print(f"\n# {script.name}", flush=True)
        out = subprocess.run([sys.executable, str(script)], cwd=HERE)
        failures += out.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
