"""One run per directory: the run directory is locked for the run's life.

The lock is `<out_dir>/run.lock`: the run holds an exclusive `flock` on it and writes its pid,
host and start time into it, so that a second run into the same directory is refused with a line
saying who holds it. The kernel releases the lock when its holder ends, however it ends (kill -9
too), so a lock file left behind by a dead run is taken over, with a warning. (On a network file
system this holds where the file system supports locks, as NFS does.)
"""

import errno
import fcntl
import json
import os
import pathlib
import socket
import time

from absl import logging

from ouroboros_jax.errors import InputError, WriteError
from ouroboros_jax.training.run_dir import LOCK_FILE

# The user may not write there: say so, rather than blame the disk (a read-only file system is a
# write failure, exit status 4, like a full disk: the run resumes once it is writable again).
_NOT_ALLOWED = (errno.EACCES, errno.EPERM)


def _describe(holder: dict) -> str:
    started = holder.get("started")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {started}"


def _read(fd: int) -> dict:
    """The holder the lock file records; {} for an empty one, one cut short by a crash while it was
    being written, or one that is not ours (any other content)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _inode(path: pathlib.Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class RunLock:
    """Holds `<out_dir>/run.lock` while in its `with` block; the directory must exist (`outputs.make_output_dir`)."""

    def __init__(self, out_dir: pathlib.Path):
        self.path = pathlib.Path(out_dir) / LOCK_FILE
        self._fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in _NOT_ALLOWED:
                raise InputError(f"--out_dir={self.path.parent}: cannot write there ({e.strerror}); choose a "
                                 "writable --out_dir") from None
            raise WriteError.at(self.path, e.strerror) from None

    def __enter__(self) -> "RunLock":
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise InputError(f"--out_dir={self.path.parent}: another run is using it ({_describe(holder)}); "
                                 "wait for it to end, or choose another --out_dir") from None
            if os.fstat(fd).st_ino == _inode(self.path):
                break
            os.close(fd)  # its holder removed the file between our open and our lock: lock the new one
        previous = _read(fd)
        if previous:
            logging.warning("%s: taking over the lock of a run that is no longer running (%s)", self.path,
                            _describe(previous))
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.time()}).encode(), 0)
        except OSError as e:
            os.close(fd)
            raise WriteError.at(self.path, e.strerror) from None
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        # Removed before it is unlocked, so a run waiting on this file sees that and locks a new one.
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
