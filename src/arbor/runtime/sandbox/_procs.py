"""The processes of one run, found through ``/proc``: by the run's own uid when isolated
(a child that calls ``setsid`` still has it), by process group otherwise. Zombies are left
out: they are dead and hold no resources beyond a pid until their parent or init reaps them."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

__all__ = ["RunProcesses"]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RunProcesses:
    uid: int | None
    pgid: int

    def _pids(self) -> list[tuple[int, list[str]]]:
        found: list[tuple[int, list[str]]] = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
                owner = os.stat(f"/proc/{name}").st_uid
            except OSError:  # exited meanwhile
                continue
            # Fields after the parenthesised command name, which may itself hold spaces.
            fields = stat[stat.rfind(")") + 2 :].split()
            if fields[0] in ("Z", "X"):  # dead, only waiting to be reaped
                continue
            pgrp = int(fields[2])
            if (self.uid is not None and owner == self.uid) or pgrp == self.pgid:
                found.append((int(name), fields))
        return found

    def cpu_seconds(self) -> float:
        """CPU of live processes, counting the reaped children each one has waited for."""
        total = 0
        for _, fields in self._pids():
            # utime, stime, cutime, cstime are fields 14-17 of stat (11-14 after the name).
            total += sum(int(v) for v in fields[11:15])
        return total / _TICKS

    def kill(self) -> int:
        """SIGKILL the group and every process of the run's uid; the number signalled."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        killed = 0
        for pid, _ in self._pids():
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed
