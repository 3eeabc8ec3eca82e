"""The daemon's own commands: ping, status, health, metrics, cache, config, models, log, keys, token, env."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from .._sync import Client
from .common import (
    EXIT_ERROR,
    UsageError,
    _fail,
    _flatten,
    _parse_value,
    _print_json,
    _read_input,
    _shown,
)


def _cmd_ping(client: Client, args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    client.ping()
    rtt_ms = (time.perf_counter() - t0) * 1000
    if args.json:
        _print_json({"ok": True, "daemon_version": client.daemon_version, "rtt_ms": round(rtt_ms, 3)})
    else:
        print(f"pong from claifd {client.daemon_version} in {rtt_ms:.2f} ms")
    return 0

def _print_status(doc: dict[str, Any]) -> None:
    rows = _flatten(doc)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {'-' if value is None else value}")

def _size(n: Any) -> str:
    n = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _status_lines(doc: dict[str, Any]) -> list[str]:
    """`claif status` for a person: one line per part, then what needs a look
    (`--json` has every field)."""
    def g(*path: str) -> Any:
        return _dig(doc, path)

    perf = doc.get("performance") or {}
    latency = perf.get("latency_ms") or {}
    rate = perf.get("requests_per_s") or {}
    providers = doc.get("providers") or {}
    named = []
    for name, p in sorted(providers.items()):
        if "type" not in p:
            named.append(name)
            continue
        keys = p.get("keys") or []
        state = (p.get("circuit") or {}).get("state", "closed")
        named.append(f"{name} ({len(keys)} key{'s' if len(keys) != 1 else ''}"
                     f"{', circuit ' + state if state != 'closed' else ''}"
                     f"{', ' + str(p.get('in_flight')) + ' in flight' if p.get('in_flight') else ''})")
    http = doc.get("http") or {}
    front = "off" if not http.get("enabled") else " · ".join(
        x for x in (f"socket {http.get('socket')}" if http.get("socket") else "",
                    f"listening {http.get('listen')}" if http.get("listen") else "",
                    f"{http.get('served', 0)} served") if x)
    lines = [
        f"claifd {doc.get('version')} · pid {doc.get('pid')} · up {float(doc.get('uptime_s') or 0):.0f} s · "
        f"{doc.get('socket')}",
        f"requests   {doc.get('requests_total')} total · {rate.get('1m', 0)}/s (1 min) · p50 {latency.get('p50')} ms · "
        f"p99 {latency.get('p99')} ms · {doc.get('in_flight')} in flight · {doc.get('connections')} connections",
        f"cache      {g('cache', 'hits')} hits · {g('cache', 'misses')} misses · {g('cache', 'coalesced')} coalesced · "
        f"{g('cache', 'entries')} entries ({_size(g('cache', 'bytes'))}) · disk {g('cache', 'disk_tier')}",
        f"sessions   {g('sessions', 'in_memory')} in memory of {g('sessions', 'total')} · "
        f"{_size(g('sessions', 'memory_bytes'))} of {_size(g('sessions', 'memory_budget_bytes'))} · "
        f"backend {g('sessions', 'backend')}",
        f"upstream   {g('upstream', 'requests')} requests · {g('upstream', 'retries')} retries · "
        f"{g('upstream', 'errors')} errors · pool {g('pool', 'transport')}, {g('pool', 'in_flight')} in flight of "
        f"{g('pool', 'max_connections')}, proxy {g('pool', 'proxy')}",
        f"providers  {', '.join(named) or '-'}",
        f"http       {front}",
        f"metrics    {doc.get('metrics_listen') or 'off'}",
        f"process    RSS {_size(g('process', 'rss_bytes'))} · CPU {g('process', 'cpu_percent')}% · "
        f"{g('process', 'threads')} threads · {doc.get('open_fds')} fds · {doc.get('tasks')} tasks",
        f"config     generation {g('config', 'generation')}",
    ]
    spend = doc.get("spend")
    if spend:
        lines.insert(-1, f"spend      ${float(spend.get('today_usd') or 0):.4f} today · "
                         f"${float(spend.get('month_usd') or 0):.4f} this month · "
                         f"{len(spend.get('budgets') or [])} budget(s) · claif spend")
    notes = []
    if doc.get("draining"):
        notes.append("draining: shutting down")
    for key, label in ((("config", "last_error"), "config"), (("cache", "disk_error"), "cache disk"),
                       (("sessions", "store_error"), "sessions"), (("sessions", "write_error"), "session writes"),
                       (("http", "error"), "http"), (("metrics_listen_error",), "metrics")):
        if g(*key):
            notes.append(f"{label}: {g(*key)}")
    notes += [f"config: {w}" for w in g("config", "warnings") or []]
    if g("sessions", "unacknowledged"):
        notes.append(f"sessions: {len(g('sessions', 'unacknowledged'))} damaged store(s) not yet acknowledged "
                     f"(claif session recover)")
    spent: dict[str, Any] = spend or {}
    for budget in spent.get("budgets") or []:
        if budget.get("state") != "ok":
            notes.append(f"spend: {budget.get('key')} {budget.get('state')} ({float(budget.get('used') or 0):.0%})")
    if spent.get("unpriced"):
        notes.append(f"spend: no price for {', '.join(spent['unpriced'])} (set prices.NAME)")
    if (spent.get("ledger") or {}).get("error"):
        notes.append(f"spend: {spent['ledger']['error']}")
    notes += [f"error: {e.get('code')} {e.get('provider')}/{e.get('model')}" for e in perf.get("last_errors") or []]
    if notes:
        lines.append("")
        lines += [f"! {n}" for n in notes]
    return lines


def _dig(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def _cmd_status(client: Client, args: argparse.Namespace) -> int:
    if not args.watch:
        doc = client.status()
        if args.json:
            _print_json(doc)
        else:
            print("\n".join(_status_lines(doc)))
        return 0
    if not args.json:
        from ..watch import watch  # rich, only for this command

        return watch(client, args.interval, use_rich=sys.stdout.isatty())
    try:
        while True:  # one JSON document per line, for a program to follow
            sys.stdout.write(msgspec.json.encode(client.status()).decode() + "\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0

def _cmd_health(client: Client, args: argparse.Namespace) -> int:
    doc = client.health()
    if args.json:
        _print_json(doc)
    else:
        print(doc["status"])
        for check in doc["checks"]:
            detail = f"  {check['detail']}" if check["detail"] else ""
            latency = f" ({check['latency_ms']:.1f} ms)" if check.get("latency_ms") is not None else ""
            print(f"  {check['name']:<18} {check['status']}{latency}{detail}")
    return {"healthy": 0, "warning": 1}.get(doc["status"], 2)

def _usd(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _cmd_spend(client: Client, args: argparse.Namespace) -> int:
    """Today and this month: what calls cost, by provider, model and namespace; what the caches saved; budgets."""
    doc = client.spend()
    if args.json:
        _print_json(doc)
        return 0
    for period, label in (("today", doc["day"]), ("month", doc["month_name"])):
        p = doc[period]
        unpriced = f", {p['unpriced_calls']} unpriced" if p["unpriced_calls"] else ""
        print(f"{period} ({label}): {_usd(p['usd'])} in {p['calls']} calls{unpriced}")
        print(f"  saved: {_usd(p['saved']['cache_usd'])} by the cache ({p['cache_hits']} hits), "
              f"{_usd(p['saved']['prompt_cache_usd'])} by the provider's prompt cache "
              f"({p['cache_read_tokens']} tokens read, {p['cache_write_tokens']} written)")
        for kind in ("provider", "model", "namespace"):
            rows = p[f"by_{kind}"]
            if rows:
                print(f"  by {kind}: " + ", ".join(f"{name} {_usd(r['usd'])}" for name, r in rows.items()))
    if doc["budgets"]:
        print(f"budgets (at the limit: {doc['action']}):")
        for b in doc["budgets"]:
            print(f"  {b['key']:<40} {_usd(b['spent_usd'])} of {_usd(b['limit_usd'])} ({b['used']:.0%}) {b['state']}")
    if doc["unpriced"]:
        print(f"no price for {', '.join(doc['unpriced'])}: set prices.NAME (their calls are not counted as free)")
    if doc["ledger"]["error"]:
        print(f"ledger: {doc['ledger']['error']}")
    print(f"(prices as of {doc['prices_as_of']}, overridable with prices.NAME)")
    return 0


def _cmd_metrics(client: Client, args: argparse.Namespace) -> int:
    text = client.metrics()
    _print_json({"text": text}) if args.json else sys.stdout.write(text)
    return 0

def _cmd_cache(client: Client, args: argparse.Namespace) -> int:
    if args.cache_command == "stats":
        doc = client.cache_stats()
        _print_json(doc) if args.json else _print_status(doc)
    elif args.cache_command == "clear":
        removed = client.cache_clear(args.namespace)
        _print_json({"removed": removed}) if args.json else print(f"removed {removed} cached answers")
    else:
        deleted = client.cache_delete(args.key)
        if args.json:
            _print_json({"deleted": deleted})
        elif not deleted:
            return _fail("NotFound", f"no cached answer with key {args.key}", EXIT_ERROR)
        else:
            print("deleted")
    return 0

def _cmd_config(client: Client, args: argparse.Namespace) -> int:
    action = args.config_command
    if action == "get":
        doc = client.config_get(args.key)
        if args.json:
            _print_json(doc)
        else:
            value = doc["value"]
            shown = msgspec.json.encode(value).decode() if isinstance(value, (dict, list)) else value
            print(f"{shown}  ({doc['source']})")
    elif action == "set":
        doc = client.config_set(args.key, _parse_value(args.value), args.scope)
        if args.json:
            _print_json(doc)
        else:
            where = f"the {doc['scope']} layer" + (f" ({doc['path']})" if doc.get("path") else "")
            print(f"wrote {doc['key']} = {_shown(doc['written'])} to {where}")
            if doc.get("notice"):
                print(f"not yet effective: {doc['notice']}")
            else:
                print(f"effective: {_shown(doc['value'])} (from {doc['source']})")
    elif action == "unset":
        doc = client.config_unset(args.key, args.scope)
        if args.json:
            _print_json(doc)
        else:
            print(f"removed {doc['key']} from the {doc['scope']} layer")
            print(f"effective: {_shown(doc['value'])} (from {doc['source']})")
    elif action == "show":
        _print_json(client.config_show()) if args.json else _print_status(client.config_show())
    elif action == "sources":
        doc = client.config_sources()
        if args.json:
            _print_json(doc)
        else:
            print(f"generation {doc['generation']}; last error: {doc['last_error'] or '-'}")
            for src in doc["sources"]:
                state = "loaded" if src["loaded"] else "missing" if not src["exists"] else "NOT loaded"
                where = src["path"] or ""
                print(f"  {src['layer']:<8} {state:<10} {where}")
                if src["error"]:
                    print(f"           error: {src['error']}")
                for key in src["unknown_keys"]:
                    print(f"           unknown key: {key}")
            for warning in doc.get("project_warnings") or []:
                print(f"  warning: {warning}")
    elif action == "reload":
        doc = client.config_reload()
        if args.json:
            _print_json(doc)
        elif doc["error"]:
            return _fail("ConfigError", doc["error"], EXIT_ERROR)
        else:
            print(f"generation {doc['generation']}; changed: {', '.join(doc['changed']) or 'nothing'}")
    else:
        doc = client.config_validate(_read_input(args.file), args.file)
        if args.json:
            _print_json(doc)
        else:
            print("valid" if doc["ok"] else "invalid:")
            for error in doc.get("errors") or ([] if doc["ok"] else [doc["error"]]):
                print(f"  error: {error}")
            for warning in doc.get("warnings") or [f"unknown key {k!r}" for k in doc["unknown_keys"]]:
                print(f"  warning: {warning} (ignored)")
        return 0 if doc["ok"] else EXIT_ERROR
    return 0

def _cmd_models(client: Client, args: argparse.Namespace) -> int:
    doc = client.models(refresh=args.refresh)
    if args.json:
        _print_json(doc)
        return 0
    print(f"default: {doc['default']}")
    for model in doc["models"]:
        source = model.get("source")
        print(model["id"] + ("  (configured)" if source == "config" else ""))
    for alias, target in sorted(doc["aliases"].items()):
        print(f"{alias} -> {target}  (alias)")
    for provider, why in sorted(doc["errors"].items()):
        print(f"# {provider}: {why}", file=sys.stderr)
    return 0

def _cmd_log(client: Client, args: argparse.Namespace) -> int:
    rows = client.request_log(args.limit, args.query)
    if args.json:
        _print_json(rows)
        return 0
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["at"]))
        model = f"{row['provider']}/{row['model']}" if row["provider"] else row["model"] or "-"
        print(f"{when}  {row.get('front', 'socket'):<9} {model:<36} {row['outcome']:<14} {row['ms']:>9.1f} ms  "
              f"{row['input_tokens']:>6} in {row['output_tokens']:>6} out  ${row['cost_usd']:.6f}")
        for label in ("prompt", "answer"):
            text = row.get(label)
            if text:
                line = " ".join(text.split())
                print(f"    {label}: {line[:200]}{'...' if len(line) > 200 else ''}")
    return 0

def _cmd_keys(client: Client, args: argparse.Namespace) -> int:
    if args.keys_command == "list":
        rows = {name: client.config_get(f"providers.{name}.api_key") for name in ("anthropic", "openai")}
        if args.json:
            _print_json(rows)
        else:
            for name, doc in rows.items():
                state = f"set ({doc['source']})" if doc["value"] is not None else "not set in the config"
                print(f"{name:<10} {state}")
        return 0
    provider = args.provider
    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass(f"{provider} API key (not shown): ")
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise UsageError("no key given")
    doc = client.config_set(f"providers.{provider}.api_key", key, "global")
    if args.json:
        _print_json({"provider": provider, "path": doc.get("path"), "source": doc["source"]})
    else:
        print(f"stored the {provider} key in {doc.get('path') or 'the global config'} (mode 0600); "
              f"the daemon uses it now (effective from: {doc['source']})")
    return 0

def _front(client: Client) -> tuple[dict[str, Any], str]:
    """The HTTP front's status and its token (read from the daemon's 0600 file)."""
    info = client.status().get("http") or {}
    if not info.get("enabled"):
        raise UsageError("the HTTP front is off: claif config set server.http.enabled true --scope global")
    path = info.get("token_file")
    try:
        token = open(path).read().strip() if path else ""
    except OSError as exc:
        raise UsageError(f"cannot read the HTTP front's token ({exc})") from exc
    return info, token

def _cmd_token(client: Client, args: argparse.Namespace) -> int:
    _, token = _front(client)
    print(token)
    return 0

def _cmd_env(client: Client, args: argparse.Namespace) -> int:
    info, token = _front(client)
    if not info.get("listen"):
        raise UsageError(f"the HTTP front listens only on its Unix socket ({info.get('socket')}); tools that take "
                         "a base URL need TCP: claif config set server.http.listen 127.0.0.1:8765 --scope global")
    url = f"http://{info['listen']}"
    lines = {"OPENAI_BASE_URL": url + "/v1", "OPENAI_API_KEY": token,
             "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": token}
    if args.json:
        _print_json(lines)
    else:
        for name, value in lines.items():
            print(f"export {name}={value}")
    return 0
