"""Edit-to-applied latency of the live configuration.

A config file is saved the way editors do (temp file, rename over), then the
client polls `config get` until the new value is visible. Baseline in the
same run: the same edit followed by an explicit `config reload` request,
i.e. the daemon's read-validate-apply time without the watcher's debounce.
Target: watched p50 <= 250 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import msgspec
from _common import daemon, print_table

from claif_client import Client

N = int(os.environ.get("BENCH_N", "40"))


def save_by_rename(path: Path, doc: object) -> None:
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def main() -> None:
    watched: list[float] = []
    explicit: list[float] = []
    with daemon() as sock:
        home = Path(sock).parent
        config = home / ".claif" / "config.json"
        with Client(sock) as c:
            value = 10
            for i in range(N):
                value += 1
                save_by_rename(config, {"batch": {"concurrency": value}})
                t0 = time.perf_counter()
                while c.config_get("batch.concurrency")["value"] != value:
                    time.sleep(0.001)
                watched.append(time.perf_counter() - t0)
                time.sleep(0.1)  # let the watcher settle before the next kind of edit
                value += 1
                save_by_rename(config, {"batch": {"concurrency": value}})
                t0 = time.perf_counter()
                c.config_reload()
                assert c.config_get("batch.concurrency")["value"] == value
                explicit.append(time.perf_counter() - t0)
                time.sleep(0.1)
    w, e = statistics.median(watched), statistics.median(explicit)
    rows = [
        {"name": "edit + explicit `config reload` (baseline)", "n": len(explicit), "p50_ms": e * 1000,
         "max_ms": max(explicit) * 1000},
        {"name": "edit, picked up by the watcher", "n": len(watched), "p50_ms": w * 1000,
         "max_ms": max(watched) * 1000, "ratio": w / e},
    ]
    print_table("config edit-to-applied latency (target: watched p50 <= 250 ms)", rows)
    print(msgspec.json.encode({"bench": "config", "rows": rows}).decode())


if __name__ == "__main__":
    main()
