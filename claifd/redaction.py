"""Keeping API keys out of every text the daemon shows: error messages from
providers (which often echo the key they refused, whole or partly masked),
logs and status.

A configured key is removed wherever any 8 consecutive characters of it
appear, not only as a whole: an error body cut at some length, or a key
echoed as `sk-proj-abc1****wxyz`, still loses every piece that could help
someone guess the key. Tokens shaped like well-known key formats (`sk-...`)
are removed too, whoever's key they are.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

__all__ = ["redact_secrets", "redact_url", "MARK"]

MARK = "[redacted]"
# Runs of characters keys are made of, masks (*, .) included.
_TOKEN = re.compile(r"[A-Za-z0-9_\-*.]{8,}")
_KEY_SHAPED = re.compile(r"^(sk|pk|rk)-|^sk_|^key-|^AKIA", re.I)
_WINDOW = 8


def _windows(secret: str) -> set[str]:
    return {secret[i : i + _WINDOW] for i in range(len(secret) - _WINDOW + 1)}


def redact_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every token that shares 8 characters with a secret, or
    looks like an API key, replaced by MARK."""
    keys = [s for s in secrets if s and len(s) >= _WINDOW]
    for key in keys:
        text = text.replace(key, MARK)
    windows: set[str] = set()
    for key in keys:
        windows |= _windows(key)

    def check(match: re.Match[str]) -> str:
        token = match.group(0)
        if _KEY_SHAPED.match(token):
            return MARK
        for piece in re.split(r"[*.]+", token):
            if len(piece) >= _WINDOW and not _windows(piece).isdisjoint(windows):
                return MARK
        return token

    return _TOKEN.sub(check, text)


def redact_url(url: str) -> str:
    """`url` without its password (for status and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
