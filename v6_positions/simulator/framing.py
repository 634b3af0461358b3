"""TWS API wire framing: 4-byte big-endian length + NUL-terminated UTF-8 fields; the "API\\0" handshake."""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import Iterable

HANDSHAKE_PREFIX = b"API\0"
# IB's own limit for one message body (TWS rejects larger frames).
MAX_FRAME_BYTES = 0xFFFFFF
_LENGTH = struct.Struct(">I")
_VERSION_RANGE = re.compile(r"^v(\d+)(?:\.\.(\d+))?(?:\s+(.*))?$")


class FrameError(ValueError):
    """A peer sent bytes that are not a valid TWS API frame; its connection should be closed."""


def format_field(value: object) -> str:
    """Encode one field the way the TWS API does: bools as 1/0, None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        # repr keeps full precision without exponent noise for normal magnitudes
        return repr(value) if value == value else ""
    return str(value)


def encode_message(fields: Iterable[object]) -> bytes:
    """One framed message from its fields."""
    body = "".join(format_field(f) + "\0" for f in fields).encode()
    return _LENGTH.pack(len(body)) + body


def decode_body(body: bytes) -> list[str]:
    """Fields of one message body; raises FrameError when it is not NUL-terminated UTF-8."""
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise FrameError(f"message is not UTF-8: {exc}") from exc
    if not text.endswith("\0"):
        raise FrameError("message body does not end with a NUL field terminator")
    return text[:-1].split("\0")


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME_BYTES) -> list[str]:
    """Read one framed message. IncompleteReadError means the peer went away (possibly mid-message)."""
    header = await reader.readexactly(4)
    (length,) = _LENGTH.unpack(header)
    if length == 0 or length > max_bytes:
        raise FrameError(f"frame length {length} outside 1..{max_bytes}")
    return decode_body(await reader.readexactly(length))


async def read_handshake(reader: asyncio.StreamReader) -> tuple[int, int, str]:
    """Read `API\\0` + framed `vMIN..MAX [options]`; returns (min_version, max_version, options)."""
    prefix = await reader.readexactly(len(HANDSHAKE_PREFIX))
    if prefix != HANDSHAKE_PREFIX:
        raise FrameError(f"expected handshake {HANDSHAKE_PREFIX!r}, got {prefix!r}")
    header = await reader.readexactly(4)
    (length,) = _LENGTH.unpack(header)
    if length == 0 or length > 1024:
        raise FrameError(f"handshake version string length {length} is implausible")
    raw = await reader.readexactly(length)
    try:
        text = raw.decode().rstrip("\0")
    except UnicodeDecodeError as exc:
        raise FrameError("handshake version string is not UTF-8") from exc
    match = _VERSION_RANGE.match(text)
    if not match:
        raise FrameError(f"handshake version string {text!r} is not 'vMIN..MAX'")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    return low, high, match.group(3) or ""
