"""Import-time code generation (autogenlib under Arbor's namespace).

``arbor.autogen.init("...")`` installs an :class:`AutogenSession`; importing
``arbor.autogen.<module>`` then generates the module from the description, the importing
code, the module's existing code and the project's codebase, validates it (syntax, names,
import policy, optional sandboxed smoke call), caches it and executes it.
"""

from __future__ import annotations

from arbor.apps.autogen.cache import AutogenCache, CacheEntry, DiskTier, ModuleUsage, RedisTier
from arbor.apps.autogen.config import AutogenConfig
from arbor.apps.autogen.errors import AutogenImportError
from arbor.apps.autogen.generator import Generator, ModuleRequest
from arbor.apps.autogen.policy import ImportPolicy
from arbor.apps.autogen.runtime import AutogenRuntime, cache_root
from arbor.apps.autogen.session import AutogenSession

__all__ = [
    "AutogenCache",
    "AutogenConfig",
    "AutogenImportError",
    "AutogenRuntime",
    "AutogenSession",
    "CacheEntry",
    "DiskTier",
    "Generator",
    "ImportPolicy",
    "ModuleRequest",
    "ModuleUsage",
    "RedisTier",
    "cache_root",
]
