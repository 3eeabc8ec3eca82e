"""`claif status --watch`: a live view of the daemon, refreshed every second.

Drawn with rich (the `watch` extra) when it is installed and stdout is a
terminal; otherwise the plain `status` listing is reprinted. Imported only
by that command, so `claif` itself stays quick to start.
"""

from __future__ import annotations

import time
from typing import Any

from ._sync import Client

__all__ = ["watch", "summary_rows"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def summary_rows(status: dict[str, Any], health: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What the view shows, as (label, value) rows (also the plain fallback)."""
    perf = status.get("performance") or {}
    rates = perf.get("requests_per_s") or {}
    latency = perf.get("latency_ms") or {}
    cache = status["cache"]
    lookups = cache["hits"] + cache["misses"]
    sessions = status["sessions"]
    process = status.get("process") or {}
    rows = [
        ("health", health["status"] if health else "-"),
        ("requests/s", f"{rates.get('1m', 0):.2f} (1 min)  {rates.get('5m', 0):.2f} (5 min)"),
        ("latency", f"p50 {_ms(latency.get('p50'))}  p90 {_ms(latency.get('p90'))}  p99 {_ms(latency.get('p99'))}"),
        ("in flight", f"{status['in_flight']} requests, {status['connections']} connections"),
        ("cache", f"hit rate {cache['hits'] / lookups:.1%} ({cache['hits']} hits, {cache['misses']} misses, "
                  f"{cache['coalesced']} coalesced)" if lookups else "no lookups yet"),
        ("memory", f"RSS {_mb(process.get('rss_bytes', 0))}; sessions {_mb(sessions['memory_bytes'])} of "
                   f"{_mb(sessions['memory_budget_bytes'])}; cache {_mb(cache['bytes'])}"),
    ]
    for name, p in sorted(status.get("providers", {}).items()):
        if "in_flight" in p:
            rows.append((f"provider {name}", f"{p['in_flight']} in flight, {p['queued']} queued "
                                             f"(limit {p['max_concurrency']})"))
    if health:
        for check in health["checks"]:
            if check["status"] != "ok":
                rows.append((f"! {check['name']}", f"{check['status']}: {check['detail']}"))
    for error in (perf.get("last_errors") or [])[-3:]:
        when = time.strftime("%H:%M:%S", time.localtime(error["at"]))
        rows.append(("last error", f"{when} {error['method']} {error['provider']}/{error['model']}: {error['code']}"))
    return rows


def watch(client: Client, interval: float, use_rich: bool = True) -> int:
    """Refresh until interrupted (Ctrl-C ends it with exit 0)."""
    try:
        if use_rich:
            try:
                from rich.live import Live  # imported only by this command
            except ImportError:
                use_rich = False
        if not use_rich:
            while True:
                _print_plain(client)
                time.sleep(interval)
        with Live(_render(client), refresh_per_second=4, transient=False) as live:
            while True:
                time.sleep(interval)
                live.update(_render(client))
    except KeyboardInterrupt:
        return 0


def _render(client: Client) -> Any:
    from rich.table import Table

    status = client.status()
    health = client.health()
    table = Table(title=f"claifd {status['version']} pid {status['pid']} up {status['uptime_s']:.0f} s",
                  show_header=False, expand=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_rows(status, health):
        style = "red" if label.startswith("!") or label == "last error" else None
        table.add_row(label, value, style=style)
    return table


def _print_plain(client: Client) -> None:
    status = client.status()
    health = client.health()
    print("\x1b[H\x1b[2J", end="")
    for label, value in summary_rows(status, health):
        print(f"{label:<18} {value}")
    print(flush=True)
