"""`claif session ...`: conversation sessions."""

from __future__ import annotations

import argparse
import sys

import msgspec

from .._sync import Client
from .common import (
    UsageError,
    _content_text,
    _meta,
    _print_json,
    _read_input,
    _when,
)


def _cmd_session(client: Client, args: argparse.Namespace) -> int:
    action = args.session_command
    if action == "new":
        doc = client.session_create(args.title, args.model, args.system, _meta(args.meta))
        _print_json({"id": doc["id"]}) if args.json else print(doc["id"])
    elif action == "list":
        doc = client.session_list(_meta(args.meta), args.offset, args.limit)
        rows = [{"id": r["id"], "title": r["title"], "updated": r["updated"], "message_count": r["message_count"]}
                for r in doc["sessions"]]
        if args.json:
            _print_json(rows)
        else:
            for r in rows:
                print(f"{r['id']}  {_when(r['updated'])}  {r['message_count']:>5} msgs  {r['title']}")
            if doc["total"] > len(rows):
                print(f"({doc['total']} sessions; --offset/--limit for more)")
    elif action == "show":
        doc = client.session_get(args.session_id)
        if args.json:
            _print_json(doc)
        else:
            print(f"{doc['title'] or doc['id']}  [{doc['id']}]  model: {doc.get('model') or 'default'}")
            if doc.get("system"):
                print(f"system: {doc['system']}")
            for i, m in enumerate(doc.get("messages", [])):
                pin = " (pinned)" if m.get("pinned") else ""
                print(f"\n[{i}] {m['role']}{pin}:\n{_content_text(m['content'])}")
    elif action == "recover":
        done = client.session_recover()["acknowledged"]
        if args.json:
            _print_json(done)
        elif not done:
            print("no damaged session files waiting")
        for record in [] if args.json else done:
            print(f"{record['path']}: {record['reason']}")
            if "salvaged" in record:
                print(f"  saved {record['salvaged']} sessions, {record['messages_salvaged']} messages; "
                      f"lost {record['messages_lost']} messages ({record['lost']} sessions left empty)")
            print("  acknowledged (the file stays where it is)")
    elif action == "rm":
        client.session_delete(args.session_id)
        _print_json({"deleted": args.session_id}) if args.json else print(f"deleted {args.session_id}")
    elif action == "export":
        doc = client.session_export(args.session_id, args.format)
        text = doc if isinstance(doc, str) else msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"
        if args.out:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
    elif action == "import":
        try:
            document = msgspec.json.decode(_read_input(args.file))
        except msgspec.DecodeError as exc:
            raise UsageError(f"{args.file} is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise UsageError(f"{args.file}: JSON nested too deeply") from exc
        doc = client.session_import(document)
        _print_json({"id": doc["id"]}) if args.json else print(doc["id"])
    else:
        doc = client.session_fork(args.session_id, args.at, args.title)
        _print_json({"id": doc["id"]}) if args.json else print(doc["id"])
    return 0
