"""An installed ``arbor.autogen``: the runtime, its finder on ``sys.meta_path`` and, when
asked, the exception explainer on ``sys.excepthook``. ``uninstall`` undoes all of it and
drops the generated modules from ``sys.modules``."""

from __future__ import annotations

import sys
from types import TracebackType

from arbor.apps.autogen.explain import explain_exception
from arbor.apps.autogen.finder import PREFIX, AutogenFinder
from arbor.apps.autogen.runtime import AutogenRuntime

__all__ = ["AutogenSession"]


class AutogenSession:
    def __init__(self, runtime: AutogenRuntime, *, explain_exceptions: bool = False) -> None:
        self.runtime = runtime
        self.finder = AutogenFinder(runtime)
        self.explain_exceptions = explain_exceptions
        self._previous_hook = sys.excepthook

    def install(self) -> None:
        if self.finder not in sys.meta_path:
            sys.meta_path.append(self.finder)
        if self.explain_exceptions:
            self._previous_hook = sys.excepthook
            sys.excepthook = self._hook

    def _hook(
        self, kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        self._previous_hook(kind, exc, tb)
        if isinstance(exc, KeyboardInterrupt | SystemExit) or self.runtime.closed:
            return
        try:
            explain_exception(self.runtime, exc.with_traceback(tb))
        except Exception as err:  # the report above stands; a failed explanation adds a line
            print(
                f"(arbor.autogen could not explain it: {type(err).__name__}: {err})",
                file=sys.stderr,
            )

    def explain(self, exc: BaseException) -> str:
        return explain_exception(self.runtime, exc)

    def uninstall(self) -> None:
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
        if sys.excepthook == self._hook:  # a bound method: equal, never the same object
            sys.excepthook = self._previous_hook
        for name in [n for n in sys.modules if n.startswith(PREFIX)]:
            loader = getattr(sys.modules[name].__spec__, "loader", None)
            if getattr(loader, "finder", None) is self.finder:
                del sys.modules[name]
        self.runtime.close()
