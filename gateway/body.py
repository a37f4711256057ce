"""The request body: read whole, up to ``ZT_MAX_BODY_BYTES``; beyond it a 413 every client receives.

A client that writes its whole body before reading the answer (Python's urllib, many mobile
HTTP stacks) gets a connection reset instead of the 413 when the server closes the connection
with the body unread (the kernel resets a socket closed with unread data). So the rest of an
oversized body is read and dropped ("drained") before the 413 is sent, when it is at most
``8 × ZT_MAX_BODY_BYTES`` and arrives within the request's deadline; the connection then stays
usable. A bigger body, or one that does not arrive in time, is answered at once with
``Connection: close``; so is a client that sent ``Expect: 100-continue`` (it has sent nothing
and never will: the 413 is its answer). The same holds for any answer given before the body
was read (401, 403, 404, 405, 429, a bad header): :func:`discard` drains it first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gateway.errors import HttpError
from services.kit.errors import InvalidArgument, ZhongtaiError

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: Up to this many times the limit, an oversized body is drained before the 413.
DRAIN_CAP_FACTOR = 8


def too_large(limit: int) -> HttpError:
    return HttpError(InvalidArgument(f"request body exceeds {limit} bytes", reason="BODY_TOO_LARGE"), http_status=413)


async def read_body(receive: Receive, headers: dict[str, str], *, limit: int, timeout_s: float) -> bytes:
    """The whole body, or :class:`HttpError` 413 (after draining, see the module doc)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        # A client waiting for "100 Continue" has sent nothing yet: answer now, drain nothing.
        waiting = headers.get("expect", "").lower() == "100-continue"
        await _refuse(receive, headers, limit, timeout_s, drain=not waiting)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ZhongtaiError("client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit:
            await _refuse(receive, headers, limit, timeout_s, drain=more)
        chunks.append(chunk)
        if not more:
            break
    return b"".join(chunks)


def has_body(headers: dict[str, str]) -> bool:
    """The request announced a body (``Content-Length`` > 0 or ``Transfer-Encoding``)."""
    declared = headers.get("content-length")
    return "transfer-encoding" in headers or (declared is not None and declared not in ("", "0"))


async def discard(receive: Receive, headers: dict[str, str], *, limit: int, timeout_s: float) -> bool:
    """Drain an unread body before an early answer; False when the connection must be closed
    instead (too big to drain, or not arriving in time)."""
    if headers.get("expect", "").lower() == "100-continue":
        return False  # the client is waiting to be asked for the body: it never will be
    declared = headers.get("content-length")
    cap = limit * DRAIN_CAP_FACTOR
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        return False
    return await _drain(receive, cap, timeout_s)


async def _refuse(receive: Receive, headers: dict[str, str], limit: int, timeout_s: float, *, drain: bool) -> None:
    """Raise the 413; drain the rest first when it is bounded, else close the connection."""
    cap = limit * DRAIN_CAP_FACTOR
    error = too_large(limit)
    declared = headers.get("content-length")
    too_big = declared is not None and declared.isdigit() and int(declared) > cap
    if drain:
        closing = too_big or not await _drain(receive, cap, timeout_s)
    else:  # the body was read whole, or the client is still waiting for "100 Continue"
        closing = headers.get("expect", "").lower() == "100-continue"
    if closing:
        error.headers.append(("connection", "close"))
    raise error


async def _drain(receive: Receive, cap: int, timeout_s: float) -> bool:
    """Read and drop the request body up to ``cap`` bytes; True when it ended in time."""

    async def drop() -> bool:
        size = 0
        while size <= cap:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return False

    try:
        return await asyncio.wait_for(drop(), timeout_s)
    except TimeoutError:
        return False
