"""One trainer per workdir: a lock file holding host, pid, start time and a heartbeat.

The trainer takes `WORKDIR/lock` before it touches the checkpoints (orbax's
start-up removes unfinished saves, which would be another trainer's
in-flight one). The file is created atomically (O_EXCL); its heartbeat is
rewritten every HEARTBEAT_S seconds while the run lives. A lock is stale,
and is taken over with a warning, when its process is gone (same host) or
its heartbeat is older than STALE_S (any host: shared storage). With several
processes, process 0 holds the lock for the run and tells the others
whether it got it. Tools that only read a workdir take no lock.

On object stores (gs://) there is no atomic create: the check is best
effort there (a second trainer started within the same second may pass).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time

import jax
import numpy as np
from etils import epath

from saol_jax.core import paths

log = logging.getLogger(__name__)

LOCK_FILE = "lock"
HEARTBEAT_S = 30.0
STALE_S = 300.0  # ten missed heartbeats


class WorkdirBusyError(RuntimeError):
    """Another live trainer holds the workdir; the message names it."""


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a lock: host name, process id, start and last heartbeat (Unix seconds)."""

    host: str
    pid: int
    started: float
    heartbeat: float

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started))
        return f"pid {self.pid} on host {self.host}, started {started}"

    def stale_reason(self, now: float) -> str | None:
        """Why this holder is dead, or None while it may be alive."""
        if self.host == socket.gethostname() and not _pid_alive(self.pid):
            return f"process {self.pid} is gone"
        if now - self.heartbeat > STALE_S:
            return f"its last heartbeat was {now - self.heartbeat:.0f} s ago (more than {STALE_S:.0f} s)"
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _read(path: str) -> Holder | None:
    """The holder recorded in `path`, or None if it is gone or unreadable (a half-written file)."""
    try:
        return Holder(**json.loads(paths.read_text(path)))
    except (OSError, ValueError, TypeError):
        return None


class WorkdirLock:
    """The held lock of one workdir; `release()` removes it and stops the heartbeat."""

    def __init__(self, path: str, holder: Holder | None):
        self.path = path
        self.holder = holder  # None on processes other than 0
        self._stop = threading.Event()
        self._thread = None
        if holder is not None:
            self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
            self._thread.start()

    def _owned(self, current: Holder | None) -> bool:
        return current is not None and (current.host, current.pid, current.started) == (
            self.holder.host, self.holder.pid, self.holder.started)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if not self._owned(_read(self.path)):  # taken over after a stall longer than STALE_S
                log.warning("the workdir lock %s is no longer this run's: another trainer took it over", self.path)
                return
            beat = dataclasses.replace(self.holder, heartbeat=time.time())
            try:
                paths.write_text(self.path, json.dumps(dataclasses.asdict(beat)))
            except OSError as error:  # a full disk must not kill the run from the heartbeat thread; the next beat retries
                log.warning("could not refresh the workdir lock %s: %s", self.path, error)

    def release(self) -> None:
        """Stops the heartbeat and removes the lock file if it is still this run's."""
        if self.holder is None:
            return
        self._stop.set()
        self._thread.join()
        if self._owned(_read(self.path)):
            try:
                epath.Path(self.path).unlink()
            except OSError as error:
                log.warning("could not remove the workdir lock %s: %s", self.path, error)
        self.holder = None


def acquire(workdir: str) -> WorkdirLock:
    """Takes `workdir`'s lock for this run, or raises WorkdirBusyError naming the live holder."""
    path = paths.join(workdir, LOCK_FILE)
    problem = ""
    holder = None
    if jax.process_index() == 0:
        try:
            holder = _take(path)
        except WorkdirBusyError as error:
            problem = str(error)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        got = bool(multihost_utils.broadcast_one_to_all(np.asarray(not problem)))
        if not got and not problem:
            problem = f"process 0 could not take the lock {path}: another trainer runs on this workdir"
    if problem:
        raise WorkdirBusyError(problem)
    return WorkdirLock(path, holder)


def _take(path: str) -> Holder:
    for _ in range(5):  # a lost race with another starter re-reads the lock
        now = time.time()
        mine = Holder(host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now)
        if _create(path, mine):
            return mine
        current = _read(path)
        if current is None:
            time.sleep(0.2)  # being written or just removed
            continue
        reason = current.stale_reason(now)
        if reason is None:
            raise WorkdirBusyError(
                f"another trainer is running on this workdir ({current.describe()}; lock {path}): wait for "
                "it to end or stop it, or give another --workdir. If that process is surely gone, delete "
                "the lock file"
            )
        if _set_aside(path, current):
            log.warning("taking over the stale workdir lock %s of %s: %s", path, current.describe(), reason)
    raise WorkdirBusyError(f"could not take the workdir lock {path}: other trainers keep starting on it")


def _create(path: str, holder: Holder) -> bool:
    """Creates the lock file holding `holder` if there is none; False if one exists."""
    text = json.dumps(dataclasses.asdict(holder))
    if paths.is_url(path):
        if paths.exists(path):
            return False
        paths.write_text(path, text)
        return True
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return True


def _set_aside(path: str, stale: Holder) -> bool:
    """Removes the stale lock `stale`; False if another starter replaced it first (then it is kept)."""
    if paths.is_url(path):  # no atomic rename on object stores: best effort
        epath.Path(path).unlink(missing_ok=True)
        return True
    aside = f"{path}.stale.{os.getpid()}"
    try:
        os.rename(path, aside)  # atomic: of two starters, one moves it
    except FileNotFoundError:
        return False
    if _read(aside) != stale:  # a fresh lock of a faster starter: put it back
        if not os.path.exists(path):
            os.rename(aside, path)
        return False
    os.remove(aside)
    return True
