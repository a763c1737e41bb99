"""Identifiers: sortable, URL-safe, prefixed by what they name (``run_…``, ``req_…``)."""

from __future__ import annotations

import os
import secrets
import socket
import time

__all__ = ["new_id", "new_owner"]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def new_id(prefix: str = "") -> str:
    """A time-ordered id: 9 chars of milliseconds then 13 random chars (~67 bits)."""
    body = _base36(time.time_ns() // 1_000_000, 9) + _base36(
        int.from_bytes(os.urandom(9), "big"), 13
    )
    return f"{prefix}_{body}" if prefix else body


def new_owner() -> str:
    """A lease owner id that says where its holder runs and is unique to it: host, pid and
    a random tag (two managers in one process hold different leases)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
