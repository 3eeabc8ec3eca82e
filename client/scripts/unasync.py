"""Generate `claif_client/_sync.py` from `claif_client/_async.py` (and
`_sync_stream.py` from `_async_stream.py`).

The client API is written once, as `AsyncClient`; `Client` is the same code
with the async tokens removed and the async names replaced (after httpcore's
`scripts/unasync.py`). All I/O differences live in `_async_io.py` and
`_sync_io.py`, which offer the same methods.

    python client/scripts/unasync.py           rewrite the generated files
    python client/scripts/unasync.py --check   exit 1 if one is out of date
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "claif_client"
# (written once, generated, the generated file's docstring)
FILES = [
    ("_async.py", "_sync.py", '''"""The blocking client: `AsyncClient`'s API and code without `await`, over
`_sync_io.SyncIO` (a blocking socket; threads take turns reading). See
`_async.py` for the design."""
'''),
    ("_async_stream.py", "_sync_stream.py", '''"""A streamed completion of the blocking client (`AsyncCompletionStream`'s
code without `await`). See `_async.py` for the design."""
'''),
]

# Order matters: longer names first.
SUBS = [
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\bAsyncCompletionStream\b", "CompletionStream"),
    (r"\bAsyncClient\b", "Client"),
    (r"\bAsyncChat\b", "SyncChat"),
    (r"\bAsyncMessages\b", "SyncMessages"),
    (r"\bAsyncIO\b", "SyncIO"),
    (r"\b_async_io\b", "_sync_io"),
    (r"\b_async_stream\b", "_sync_stream"),
    (r"\b_async\b", "_sync"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\baclose\b", "close"),
]


def generate(source: str, name: str, doc: str) -> str:
    # The module docstring is the async file's own; the header replaces it.
    body = source[source.index('"""', 3) + 3:]
    for pattern, replacement in SUBS:
        body = re.sub(pattern, replacement, body)
    return f"# Generated from {name} by client/scripts/unasync.py: edit that file, then run the script.\n" + doc + body


def main(argv: list[str]) -> int:
    stale = 0
    for source, target, doc in FILES:
        wanted = generate((PACKAGE / source).read_text(), source, doc)
        path = PACKAGE / target
        if "--check" in argv:
            if not path.exists() or path.read_text() != wanted:
                print(f"{path} is out of date: run python client/scripts/unasync.py", file=sys.stderr)
                stale = 1
        else:
            path.write_text(wanted)
    return stale


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
