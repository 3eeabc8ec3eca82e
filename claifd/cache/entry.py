"""A cached answer, in memory and on disk.

In memory an entry keeps the response already encoded as msgpack (with
`cached="exact"` set), so a hit is answered by splicing those bytes into a
`done` frame without encoding anything again. On disk the same payload is
compressed and carries a CRC-32, so a damaged row is recognised and dropped
rather than served.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

from claif_client.protocol import CompletionResponse

__all__ = ["MemEntry", "Payload", "Codec", "DamagedEntry", "ENTRY_OVERHEAD", "make_entry"]

# Bytes charged per entry beyond its payload: the object, its slots, the LRU
# link and the key string (measured with tracemalloc, rounded up).
ENTRY_OVERHEAD = 600
CHUNK_OVERHEAD = 56


class DamagedEntry(Exception):
    """A stored entry failed its checksum or could not be decoded."""


class Payload(msgspec.Struct, array_like=True):
    """What is persisted: the response and, for streamed answers, its chunks."""

    response: CompletionResponse
    chunks: list[str] | None = None


class MemEntry:
    __slots__ = (
        "key", "namespace", "raw", "chunks", "created_at", "expires_at", "ttl", "fixed_ttl",
        "hits", "size", "input_tokens", "output_tokens", "model",
    )

    def __init__(
        self,
        key: str,
        namespace: str,
        raw: bytes,
        chunks: tuple[str, ...] | None,
        created_at: float,
        ttl: float,
        fixed_ttl: bool,
        hits: int,
        input_tokens: int,
        output_tokens: int,
        model: str,
    ) -> None:
        self.key = key
        self.namespace = namespace
        # Pre-encoded: spliced into reply frames as is.
        self.raw = msgspec.Raw(raw)
        self.chunks = chunks
        self.created_at = created_at
        self.ttl = ttl
        self.expires_at = created_at + ttl
        self.fixed_ttl = fixed_ttl
        self.hits = hits
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.model = model
        self.size = ENTRY_OVERHEAD + len(key) + len(raw) + sum(len(c) + CHUNK_OVERHEAD for c in chunks or ())

    def response(self) -> CompletionResponse:
        return _response_decoder.decode(self.raw)

    def __repr__(self) -> str:
        return f"<MemEntry {self.key[:12]} ns={self.namespace} size={self.size} hits={self.hits}>"


_response_encoder = msgspec.msgpack.Encoder()
_response_decoder = msgspec.msgpack.Decoder(CompletionResponse)
_payload_decoder = msgspec.msgpack.Decoder(Payload)


def make_entry(
    key: str,
    namespace: str,
    response: CompletionResponse,
    chunks: list[str] | None,
    created_at: float,
    ttl: float,
    fixed_ttl: bool,
    hits: int = 0,
) -> MemEntry:
    stored = msgspec.structs.replace(response, cached="exact")
    return MemEntry(
        key, namespace, _response_encoder.encode(stored), tuple(chunks) if chunks is not None else None,
        created_at, ttl, fixed_ttl, hits, response.usage.input_tokens, response.usage.output_tokens, response.model,
    )


class Codec:
    """Payload <-> compressed bytes with a checksum. `compression`: zlib, zstd or none."""

    def __init__(self, compression: str = "zlib") -> None:
        self.compression = compression
        self._zstd: Any = None
        if compression == "zstd":
            try:
                import zstandard  # type: ignore[import-not-found]
            except ImportError as exc:
                raise ValueError("cache.compression 'zstd' needs the zstandard package") from exc
            self._zstd = (zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor())
        elif compression not in ("zlib", "none"):
            raise ValueError(f"unknown cache.compression {compression!r} (zlib, zstd or none)")

    def encode(self, entry: MemEntry) -> tuple[bytes, int]:
        payload = Payload(response=entry.response(), chunks=list(entry.chunks) if entry.chunks is not None else None)
        data = _response_encoder.encode(payload)
        if self.compression == "zlib":
            blob = b"z" + zlib.compress(data, 6)
        elif self.compression == "zstd":
            blob = b"s" + self._zstd[0].compress(data)
        else:
            blob = b"n" + data
        return blob, zlib.crc32(blob)

    def decode(self, blob: bytes, checksum: int) -> Payload:
        """The payload of a stored blob; `DamagedEntry` if anything is off."""
        if zlib.crc32(blob) != checksum:
            raise DamagedEntry("checksum mismatch")
        try:
            kind, body = blob[:1], blob[1:]
            if kind == b"z":
                data = zlib.decompress(body)
            elif kind == b"s":
                if self._zstd is None:
                    import zstandard

                    self._zstd = (zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor())
                data = self._zstd[1].decompress(body)
            elif kind == b"n":
                data = body
            else:
                raise DamagedEntry(f"unknown compression marker {kind!r}")
            return _payload_decoder.decode(data)
        except DamagedEntry:
            raise
        except Exception as exc:  # zlib.error, msgspec errors, zstd errors...
            raise DamagedEntry(f"{type(exc).__name__}: {exc}") from exc
