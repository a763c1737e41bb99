"""Session ids and nonces signed with the service secret; sessions expire and end; failed
logins are throttled per client."""

from __future__ import annotations

from datetime import UTC, datetime

from arbor.service.dashboard.sessions import LoginThrottle, SessionStore, Signer, tokens_match
from arbor.store import KeyRecord


def _key(key_id: str = "key_1", prefix: str = "abc") -> KeyRecord:
    return KeyRecord(
        id=key_id,
        name="person",
        prefix=prefix,
        scopes=("run",),
        created_at=datetime.now(UTC),
        expires_at=None,
        revoked_at=None,
        last_used_at=None,
        rpm=None,
        tpm=None,
        budget_usd=None,
    )


def test_signatures_depend_on_secret_purpose_and_value() -> None:
    signer = Signer("s3cret")
    signed = signer.sign("session", "abc")
    assert signer.unsign("session", signed) == "abc"
    assert Signer("s3cret").unsign("session", signed) == "abc"  # same secret, same answer
    assert Signer("other").unsign("session", signed) is None
    assert signer.unsign("login", signed) is None
    assert signer.unsign("session", "abd" + signed[3:]) is None
    assert signer.unsign("session", signed + "x") is None
    for bad in (None, "", ".", "abc", "abc.", ".sig", "x" * 300):
        assert signer.unsign("session", bad) is None
    assert "s3cret" not in signed


def test_without_a_secret_each_signer_is_different() -> None:
    assert Signer(None).unsign("session", Signer(None).sign("session", "a")) is None


def test_sessions_expire_end_and_are_bounded() -> None:
    now = [1000.0]
    store = SessionStore(ttl=60, max_sessions=2, clock=lambda: now[0])
    first = store.create(_key("key_1"))
    assert first.scopes == frozenset({"read", "run"})
    assert first.csrf_token and first.csrf_token != first.id
    assert store.get(first.id) == first
    now[0] += 61
    assert store.get(first.id) is None
    a = store.create(_key("key_2"))
    b = store.create(_key("key_2"))
    c = store.create(_key("key_3"))
    assert store.get(a.id) is None  # the oldest went first
    assert store.end_for_key("key_2") == 1
    assert store.get(b.id) is None
    store.end(c.id)
    assert len(store) == 0


def test_tokens_match_is_strict() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abd", "abc")
    assert not tokens_match(None, "abc")
    assert not tokens_match("", "abc")
    assert not tokens_match("ab\udcff", "abc")


def test_login_throttle_counts_failures_per_client_in_a_window() -> None:
    now = [0.0]
    throttle = LoginThrottle(max_failures=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert throttle.wait("1.2.3.4") == 0
        throttle.failed("1.2.3.4")
        now[0] += 1
    assert throttle.wait("1.2.3.4") == 57  # the oldest of the last three fails out at 60
    assert throttle.wait("5.6.7.8") == 0
    now[0] = 61
    assert throttle.wait("1.2.3.4") == 0
    throttle.failed("1.2.3.4")
    throttle.succeeded("1.2.3.4")
    assert throttle.wait("1.2.3.4") == 0
