"""A work dir belongs to one run: a finished run is never replaced silently, and two runs never write into one.

A new run into a folder that already holds ``last.pt`` / ``best.pt`` is refused with the three ways out
(``--resume``, ``--work-dir``, ``--overwrite``): the same settings re-run with other values would otherwise replace
a good model with a worse one without a word. While a run uses a folder, ``train.lock`` in it holds the process
id; a second run into that folder is refused, and a lock whose process is gone (killed run) is taken over.
"""
from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import List, Optional, Union

from .cli import check_output
from .state import TrainingError

#: what a training run writes into its work dir: ``--overwrite`` removes exactly these
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "train.log", "config.yml", "curves.png")
RUN_DIRS = ("vis", "tensorboard")
#: the checkpoints that make a folder hold a previous run
CHECKPOINTS = ("last.pt", "best.pt")
LOCK_NAME = "train.lock"


def previous_run(work_dir: Union[str, Path]) -> List[str]:
    """The checkpoints of an earlier run in ``work_dir`` (empty: nothing to lose there)."""
    return [name for name in CHECKPOINTS if (Path(work_dir) / name).is_file()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class WorkDirLock:
    """``work_dir/train.lock`` (``pid host time token``) held from :func:`claim` until :meth:`release`."""

    def __init__(self, work_dir: Path) -> None:
        self.path = Path(work_dir) / LOCK_NAME
        # what this lock wrote: released only while the file still says so (not another Trainer's lock)
        self.text = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%d %H:%M:%S')} {uuid.uuid4().hex}\n"
        self.took_over: Optional[str] = None  # the stale holder, for the run's log
        self.replaced: List[str] = []  # the earlier run's checkpoints removed by --overwrite, for the run's log
        self.held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._check_holder()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.text)
            self.held = True
            return
        raise TrainingError(f"{self.path.parent}: another run took its lock {self.path} just now; train into "
                            "another folder with --work-dir DIR")

    def _check_holder(self) -> None:
        """Refuse when a live process holds the lock; remove it when its process is gone (or is this one)."""
        try:
            pid_s, host = self.path.read_text(encoding="utf-8").split()[:2]
            pid = int(pid_s)
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.path.stat().st_mtime))
        except (OSError, ValueError):  # empty or torn (killed while writing it): nobody can be holding it
            pid, host, since = -1, socket.gethostname(), ""
        here = host == socket.gethostname()
        if here and pid != os.getpid() and _alive(pid):
            raise TrainingError(
                f"{self.path.parent} is in use by another training run (pid {pid}, started {since}); "
                f"wait for it to finish or train into another folder with --work-dir DIR")
        if not here:
            raise TrainingError(
                f"{self.path.parent} is in use by a training run on {host} (pid {pid}, started {since}); "
                f"train into another folder with --work-dir DIR, or delete {self.path} if that run is gone")
        if pid != os.getpid():
            self.took_over = f"pid {pid}" if pid > 0 else "an unreadable lock"
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        """Remove the lock if this process still holds it (idempotent)."""
        if not self.held:
            return
        self.held = False
        try:
            if self.path.read_text(encoding="utf-8") == self.text:
                self.path.unlink()
        except OSError:
            pass


def claim(work_dir: Union[str, Path], resume: bool, overwrite: bool) -> WorkDirLock:
    """Lock ``work_dir`` for this run; refuse to start a new run over an earlier one unless ``overwrite``
    (which removes the earlier run's files) or ``resume`` (which continues it)."""
    work_dir = Path(work_dir)
    lock = WorkDirLock(work_dir)
    lock.acquire()
    found = [] if resume else previous_run(work_dir)
    if found and not overwrite:
        lock.release()
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(max((work_dir / n).stat().st_mtime for n in found)))
        raise TrainingError(
            f"{work_dir} holds a previous run ({', '.join(found)} of {when}) that a new run would replace; continue "
            f"it with --resume, keep it and train into another folder with --work-dir DIR, or replace it with "
            f"--overwrite")
    if found:
        lock.replaced = found
        for name in RUN_FILES:
            (work_dir / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(work_dir / name, ignore_errors=True)
    return lock


def check_writable(work_dir: Union[str, Path]) -> List[Path]:
    """Refuse, before any work, a work dir the run could not write (a file in its place or above it, a folder where
    one of its :data:`RUN_FILES` goes, no permission); returns the folders the run will create, for
    :func:`remove_new`."""
    work_dir = Path(work_dir)
    check_output(work_dir, "work dir", folder=True)
    for name in RUN_FILES:
        check_output(work_dir / name, "work dir file")
    missing = []
    d = work_dir.absolute()
    while not d.exists():
        missing.insert(0, d)
        d = d.parent
    return missing


def remove_new(work_dir: Union[str, Path], created: List[Path]) -> None:
    """Undo a run refused before training in a work dir it created (``created``, from :func:`check_writable`): its
    files and the folders, so no empty run is left behind; anything else found there stays."""
    work_dir = Path(work_dir)
    for name in (*RUN_FILES, LOCK_NAME):
        (work_dir / name).unlink(missing_ok=True)
    for name in RUN_DIRS:
        shutil.rmtree(work_dir / name, ignore_errors=True)
    for d in reversed(created):  # the deepest first; a folder that holds something else stays
        try:
            d.rmdir()
        except OSError:
            break
