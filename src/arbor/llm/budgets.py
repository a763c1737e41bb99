"""Spending limits in USD per scope: an API key, a run, a batch, or ``"global"``.

A call first *reserves* its estimated cost in every scope it belongs to; the reservation
fails with :class:`BudgetExceededError` if any scope's ``spent + reserved + estimate`` would
pass its limit, so concurrent calls cannot jointly overshoot a budget by more than their
estimates were wrong. When the call ends, :meth:`BudgetTracker.commit` swaps the estimate for
the real cost (or :meth:`BudgetTracker.release` drops it if nothing was spent).

Amounts are kept as integer nano-dollars, so sums never drift (0.1 + 0.2 is exactly 0.3 of
a limit). All methods are synchronous and take one lock without awaiting, which makes the
tracker safe across threads and across tasks of one loop.

A shared (Redis/DB) tracker keeps this interface: limits and already spent amounts are
loaded with :meth:`BudgetTracker.set_limit` and :meth:`BudgetTracker.seed`, a
:class:`BudgetReservation` is plain data (an id, scopes and an amount) that can live in a
store, and ``reserve`` becomes one atomic check-and-add over the scopes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from arbor.core.errors import BudgetExceededError

__all__ = ["GLOBAL_SCOPE", "BudgetReservation", "BudgetTracker"]

GLOBAL_SCOPE = "global"
_NANO = 1_000_000_000


def _to_nano(usd: float) -> int:
    return round(usd * _NANO)


def _to_usd(nano: int) -> float:
    return nano / _NANO


@dataclass(frozen=True, slots=True)
class BudgetReservation:
    """``amount_usd`` held in each of ``scopes`` until committed or released."""

    id: int
    scopes: tuple[str, ...]
    amount_usd: float


class BudgetTracker:
    """Limits, spending and outstanding reservations per scope, in one process.

    Scopes with no limit are still accounted (``spent`` works for them) but never refuse.
    """

    def __init__(
        self,
        limits: Mapping[str, float] | None = None,
        *,
        spent: Mapping[str, float] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._limits: dict[str, int] = {}
        self._spent: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._open: dict[int, tuple[tuple[str, ...], int]] = {}
        self._ids = itertools.count(1)
        #: Told every committed spend (scopes, USD) after the lock is released: how a
        #: shared tracker (:mod:`arbor.llm._redis_budgets`) publishes it to other processes.
        self.on_spend: Callable[[tuple[str, ...], float], None] | None = None
        for scope, usd in (limits or {}).items():
            self.set_limit(scope, usd)
        for scope, usd in (spent or {}).items():
            self.seed(scope, usd)

    # ---- configuration ------------------------------------------------------------------
    def set_limit(self, scope: str, limit_usd: float | None) -> None:
        """Set (or with ``None`` remove) a scope's limit; takes effect for new reservations."""
        if limit_usd is not None and limit_usd < 0:
            raise ValueError("a budget limit must be >= 0")
        with self._lock:
            if limit_usd is None:
                self._limits.pop(scope, None)
            else:
                self._limits[scope] = _to_nano(limit_usd)

    def seed(self, scope: str, spent_usd: float) -> None:
        """Start ``scope`` from an amount already spent (read from the store at start-up)."""
        with self._lock:
            self._spent[scope] = _to_nano(spent_usd)

    # ---- the call path ------------------------------------------------------------------
    def has_limits(self, scopes: Iterable[str]) -> bool:
        """Whether any of ``scopes`` is limited (if none is, callers can skip estimating)."""
        limits = self._limits
        return any(s in limits for s in scopes)

    def reserve(self, scopes: Sequence[str], estimated_usd: float) -> BudgetReservation:
        """Hold ``estimated_usd`` in every scope, or raise :class:`BudgetExceededError`
        naming the first scope that cannot afford it (nothing is held then)."""
        if estimated_usd < 0:
            raise ValueError("estimated_usd must be >= 0")
        amount = _to_nano(estimated_usd)
        scopes = tuple(dict.fromkeys(scopes))  # a scope listed twice is charged once
        with self._lock:
            for scope in scopes:
                limit = self._limits.get(scope)
                if limit is None:
                    continue
                used = self._spent.get(scope, 0) + self._reserved.get(scope, 0)
                if used + amount > limit:
                    raise BudgetExceededError(
                        f"budget {scope!r} of ${_to_usd(limit):.6f} would be exceeded: "
                        f"${_to_usd(self._spent.get(scope, 0)):.6f} spent, "
                        f"${_to_usd(self._reserved.get(scope, 0)):.6f} reserved, "
                        f"this call needs up to ${estimated_usd:.6f}",
                        scope=scope,
                        limit_usd=_to_usd(limit),
                    )
            for scope in scopes:
                self._reserved[scope] = self._reserved.get(scope, 0) + amount
            rid = next(self._ids)
            self._open[rid] = (scopes, amount)
        return BudgetReservation(rid, scopes, _to_usd(amount))

    def commit(self, reservation: BudgetReservation, actual_usd: float) -> None:
        """Replace the hold with the real cost. Spending may pass a limit here (the money is
        gone); later reservations are refused. A second commit or release is ignored."""
        actual = _to_nano(max(0.0, actual_usd))
        with self._lock:
            held = self._open.pop(reservation.id, None)
            if held is None:
                return
            scopes, amount = held
            for scope in scopes:
                self._reserved[scope] -= amount
                self._spent[scope] = self._spent.get(scope, 0) + actual
        if actual > 0 and self.on_spend is not None:
            self.on_spend(scopes, _to_usd(actual))

    def release(self, reservation: BudgetReservation) -> None:
        """Drop the hold without spending (the call never reached a provider)."""
        with self._lock:
            held = self._open.pop(reservation.id, None)
            if held is None:
                return
            scopes, amount = held
            for scope in scopes:
                self._reserved[scope] -= amount

    # ---- reading ------------------------------------------------------------------------
    def spent(self, scope: str) -> float:
        return _to_usd(self._spent.get(scope, 0))

    def reserved(self, scope: str) -> float:
        return _to_usd(self._reserved.get(scope, 0))

    def limit(self, scope: str) -> float | None:
        found = self._limits.get(scope)
        return None if found is None else _to_usd(found)

    def remaining(self, scope: str) -> float | None:
        """What a new reservation may still take in ``scope`` (``None``: unlimited)."""
        with self._lock:
            limit = self._limits.get(scope)
            if limit is None:
                return None
            used = self._spent.get(scope, 0) + self._reserved.get(scope, 0)
            return _to_usd(max(0, limit - used))
