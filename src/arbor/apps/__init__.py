"""Built-in applications on Arbor's agents and workflows (``renode``: SVD → Renode models)."""

from __future__ import annotations

__all__: list[str] = []
