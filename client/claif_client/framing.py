"""Length-prefixed framing, sans-IO: bytes in, complete payloads out.

The decoder holds the bytes of at most one incomplete frame. It checks a
frame's declared length against the limit as soon as the 4-byte header is
there, before any of the payload is buffered (as h11 does with
``max_incomplete_event_size``), so a hostile or corrupt length costs nothing.
"""

from __future__ import annotations

from .protocol import HEADER_SIZE, MAX_FRAME_SIZE

__all__ = ["FrameDecoder", "FrameTooLarge"]


class FrameTooLarge(Exception):
    """A frame header declared a payload above the limit. The stream is unusable."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FrameDecoder:
    def __init__(self, max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        # Frames completed out of the buffer (whole frames that arrive in one
        # read are not counted): it moves whenever a partial frame completes.
        self.completed = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete frame held back (non-zero at EOF = truncated)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | memoryview]:
        """Add received bytes; return the payloads of every frame now complete.

        Raises `FrameTooLarge` as soon as a header announces an oversized frame.
        """
        if not self._buf:
            # Fast path: the common case is exactly one whole frame per read;
            # hand out a view of it without copying into the buffer.
            n = len(data)
            if n >= HEADER_SIZE:
                size = int.from_bytes(data[:HEADER_SIZE], "big")
                if size > self.max_frame_size:
                    raise FrameTooLarge(size, self.max_frame_size)
                if n == HEADER_SIZE + size:
                    return [memoryview(data)[HEADER_SIZE:]]
        buf = self._buf
        buf += data
        frames: list[bytes | memoryview] = []
        pos = 0
        end_of_data = len(buf)
        while end_of_data - pos >= HEADER_SIZE:
            size = int.from_bytes(buf[pos : pos + HEADER_SIZE], "big")
            if size > self.max_frame_size:
                raise FrameTooLarge(size, self.max_frame_size)
            end = pos + HEADER_SIZE + size
            if end > end_of_data:
                break
            frames.append(bytes(buf[pos + HEADER_SIZE : end]))
            pos = end
        if pos:
            if pos == end_of_data:
                self._buf = bytearray()  # (not `del`: a 16 MiB buffer would keep its capacity)
            else:
                del buf[:pos]
            self.completed += len(frames)
        return frames

    def __repr__(self) -> str:
        return f"<FrameDecoder pending={len(self._buf)}B limit={self.max_frame_size}B>"
