"""Dashboard sessions: a person logs in once with an API key and then carries a cookie.

The cookie holds a random session id and its HMAC-SHA256 under the service's
``session_secret`` (a random per-process secret when none is configured), never the key:
a stolen cookie cannot be turned back into an API key, and a forged or altered one fails
the constant-time signature check. The session itself (whose key, which scopes, the CSRF
token) lives in this process's :class:`SessionStore`, so logging out ends it at once; the
server forgets every session when it restarts.

CSRF: every session has its own random token, put into each state-changing form (and the
``X-CSRF-Token`` header htmx sends); the server compares it in constant time. The login form,
which comes before any session, uses a signed double-submit nonce (cookie + hidden field).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from arbor.store import KeyRecord

__all__ = ["LoginThrottle", "Session", "SessionStore", "Signer", "tokens_match"]

#: Sessions end this long after login, whatever happens in between.
SESSION_SECONDS = 8 * 3600
#: The most sessions one process keeps; the oldest go first beyond it.
MAX_SESSIONS = 10_000
#: Failed logins one client may make per window before it has to wait.
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0


def tokens_match(given: str | None, expected: str) -> bool:
    """Constant-time equality for tokens (False for a missing one)."""
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class Signer:
    """Signs short values (session ids, login nonces) with the service's secret."""

    def __init__(self, secret: str | None) -> None:
        # A random secret when none is configured: cookies then die with the process.
        raw = secret if secret else secrets.token_urlsafe(32)
        self._key = hashlib.sha256(b"arbor-dashboard\x00" + raw.encode()).digest()

    def _mac(self, purpose: str, value: str) -> str:
        digest = hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def sign(self, purpose: str, value: str) -> str:
        """``value.signature``; ``purpose`` keeps a login nonce from passing as a session."""
        return f"{value}.{self._mac(purpose, value)}"

    def unsign(self, purpose: str, signed: str | None) -> str | None:
        """The value if ``signed`` carries a valid signature for ``purpose``, else None."""
        if not signed or len(signed) > 256:
            return None
        value, dot, mac = signed.rpartition(".")
        if not dot or not value:
            return None
        return value if tokens_match(mac, self._mac(purpose, value)) else None


@dataclass(frozen=True, slots=True)
class Session:
    """Who is logged in: the key's id, name and scopes — never the key itself."""

    id: str
    key_id: str
    #: The key's public prefix at login; a rotated key has a new one and ends the session.
    key_prefix: str
    name: str
    scopes: frozenset[str]
    csrf_token: str
    expires_at: float
    created_at: float = field(default_factory=time.time)

    @property
    def display_name(self) -> str:
        return self.name or self.key_id

    def can(self, scope: str) -> bool:
        return scope in self.scopes


class SessionStore:
    """The sessions of one dashboard (one app), oldest first, bounded."""

    def __init__(
        self,
        *,
        ttl: float = SESSION_SECONDS,
        max_sessions: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, key: KeyRecord) -> Session:
        now = self._clock()
        session = Session(
            id=secrets.token_urlsafe(32),
            key_id=key.id,
            key_prefix=key.prefix,
            name=key.name,
            scopes=frozenset(key.granted),
            csrf_token=secrets.token_urlsafe(32),
            expires_at=now + self.ttl,
            created_at=now,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str) -> Session | None:
        """The live session with that id (an expired one is dropped)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def end(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def end_for_key(self, key_id: str) -> int:
        """End every session of a key (it was revoked or rotated); how many ended."""
        ids = [sid for sid, s in self._sessions.items() if s.key_id == key_id]
        for sid in ids:
            del self._sessions[sid]
        return len(ids)

    def __len__(self) -> int:
        return len(self._sessions)


class LoginThrottle:
    """Failed logins per client address in a sliding window: past ``max_failures`` the
    client waits, so the login form cannot be used to hammer the key store."""

    def __init__(
        self,
        *,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        max_clients: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before trying again (0: it may try now)."""
        recent = self._recent(client)
        if len(recent) < self.max_failures:
            return 0.0
        return max(0.0, recent[-self.max_failures] + self.window - self._clock())

    def failed(self, client: str) -> None:
        self._failures[client] = [*self._recent(client), self._clock()]
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> list[float]:
        cutoff = self._clock() - self.window
        return [t for t in self._failures.get(client, ()) if t > cutoff]
