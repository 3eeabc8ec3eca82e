"""The mutation guard (`make mutate`): break each headline guarantee on
purpose, one at a time, and check that the tests named for it notice.

The list is `tests/mutations.toml`. Each entry names a file, a regular
expression that must match exactly once there (never a line number, so the
list keeps applying while code moves), its replacement, and the tests that
guard it. A mutation survives when those tests still pass; one whose pattern
no longer matches is an error, to be re-targeted, never dropped.

How it runs: the checkout's files (as git lists them) are copied to a
scratch directory per worker, the mutated file is written there, and pytest
runs with that copy first on PYTHONPATH. The daemon, the simulator and the
CLI that the tests start inherit PYTHONPATH, so they run the mutated code
too, while the checkout itself is never touched. First the named tests run
once unmutated: a guard whose tests fail anyway proves nothing.

    python tests/mutate.py               every mutation (2 at a time)
    python tests/mutate.py -k retry      those whose name contains "retry"
    python tests/mutate.py --list        the list, nothing run
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

ROOT = Path(__file__).resolve().parent.parent
LIST = Path(__file__).with_name("mutations.toml")
# One mutation's tests; a hang is caught by pytest-timeout long before this.
RUN_TIMEOUT = 600


@dataclass(frozen=True)
class Mutation:
    name: str
    guarantee: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]

    def apply(self, source: str) -> str:
        """The mutated source; ValueError unless `find` matches exactly once."""
        matches = list(re.finditer(self.find, source, re.MULTILINE))
        if len(matches) != 1:
            raise ValueError(f"{self.name}: the pattern matches {len(matches)} times in {self.file} (must be 1)")
        match = matches[0]
        return source[: match.start()] + match.expand(self.replace) + source[match.end():]


@dataclass
class Outcome:
    mutation: Mutation
    verdict: str  # caught, SURVIVED, ERROR
    seconds: float
    detail: str = ""


def load(path: Path = LIST) -> list[Mutation]:
    doc = tomllib.loads(path.read_text())
    mutations = [
        Mutation(m["name"], m["guarantee"], m["file"], m["find"], m["replace"], tuple(m["tests"]))
        for m in doc["mutation"]
    ]
    names = [m.name for m in mutations]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SystemExit(f"duplicate mutation names: {', '.join(sorted(duplicates))}")
    return mutations


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


@contextmanager
def scratch_copies(count: int) -> Iterator[Queue[Path]]:
    """`count` copies of the checkout, handed out one per running job."""
    base = Path(tempfile.mkdtemp(prefix="claif-mutate-"))
    files = tracked_files()
    pool: Queue[Path] = Queue()
    try:
        for i in range(count):
            copy = base / f"w{i}"
            for name in files:
                target = copy / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, target)
            pool.put(copy)
        yield pool
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_pytest(copy: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(copy), str(copy / "client")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        return -1, f"no result within {RUN_TIMEOUT} s"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    # Which test noticed, and how ("FAILED tests/x.py::test_y - AssertionError: ..."):
    # a mutation caught by an unrelated crash would show here.
    failed = next((line.removeprefix("FAILED ") for line in lines if line.startswith("FAILED ")), "")
    summary = lines[-1] if lines else proc.stderr.strip()[-200:]
    return proc.returncode, (failed[:150] if failed else summary)


def check_one(mutation: Mutation, pool: Queue[Path]) -> Outcome:
    copy = pool.get()
    target = copy / mutation.file
    original = target.read_text()
    started = time.monotonic()
    try:
        try:
            mutated = mutation.apply(original)
            compile(mutated, mutation.file, "exec")
        except (ValueError, SyntaxError, re.error) as exc:
            return Outcome(mutation, "ERROR", 0.0, str(exc))
        target.write_text(mutated)
        code, summary = run_pytest(copy, mutation.tests)
        seconds = time.monotonic() - started
        if code == 1:
            return Outcome(mutation, "caught", seconds, summary)
        if code == 0:
            return Outcome(mutation, "SURVIVED", seconds, summary)
        return Outcome(mutation, "ERROR", seconds, f"pytest exit {code}: {summary}")
    finally:
        target.write_text(original)
        pool.put(copy)


def baseline(mutations: list[Mutation], pool: Queue[Path]) -> None:
    """Every named test passes on the unmutated code, or the guard means nothing."""
    tests = tuple(dict.fromkeys(t for m in mutations for t in m.tests))
    copy = pool.get()
    try:
        print(f"baseline: {len(tests)} test selections, unmutated ...", flush=True)
        code, summary = run_pytest(copy, tests)
    finally:
        pool.put(copy)
    if code != 0:
        raise SystemExit(f"baseline failed (pytest exit {code}: {summary}); fix the suite before mutating")
    print(f"baseline: {summary}", flush=True)


def report(outcomes: list[Outcome], wall: float) -> int:
    width = max(len(o.mutation.name) for o in outcomes)
    print()
    print(f"{'mutation':<{width}}  {'verdict':<8}  {'secs':>5}  file / what the tests said")
    for o in outcomes:
        print(f"{o.mutation.name:<{width}}  {o.verdict:<8}  {o.seconds:5.1f}  {o.mutation.file}: {o.detail}")
    caught = sum(o.verdict == "caught" for o in outcomes)
    print(f"\n{caught} of {len(outcomes)} mutations caught in {wall:.0f} s")
    bad = [o for o in outcomes if o.verdict != "caught"]
    for o in bad:
        print(f"  {o.verdict}: {o.mutation.name} -- {o.mutation.guarantee}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-k", dest="only", default="", help="only mutations whose name contains this")
    p.add_argument("-j", "--jobs", type=int, default=2, help="mutations checked at once (default 2)")
    p.add_argument("--list", action="store_true", help="print the list and exit")
    args = p.parse_args(argv)
    mutations = [m for m in load() if args.only in m.name]
    if not mutations:
        raise SystemExit(f"no mutation matches {args.only!r}")
    if args.list:
        for m in mutations:
            print(f"{m.name}: {m.guarantee} ({m.file}; {', '.join(m.tests)})")
        return 0
    started = time.monotonic()
    with scratch_copies(max(1, args.jobs)) as pool:
        baseline(mutations, pool)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as workers:
            futures = [workers.submit(check_one, m, pool) for m in mutations]
            outcomes = []
            for future in futures:
                outcome = future.result()
                print(f"{outcome.verdict:<8} {outcome.mutation.name} ({outcome.seconds:.1f} s)", flush=True)
                outcomes.append(outcome)
    return report(outcomes, time.monotonic() - started)


if __name__ == "__main__":
    sys.exit(main())
