"""Errors a user meets, and how command-line entry points report them.

Every failure a user can cause or must act on is a `CommandError` whose message is one line
naming the file or flag and what to do. The CLIs wrap their `main` with `report_input_errors`,
which prints `error: <message>` (no traceback) and exits with the error's status, and parse
their flags with `cli.parse`, which does the same for absl's flag errors:

  2  `InputError`: a bad flag or file (also absl's flag errors)
  3  `NoSeedSurvived`: every seed of a run diverged (in training, or in every validation
     rollout), nothing was selected
  4  `WriteError`: a file could not be written (a full disk, a read-only file system)
  130  interrupted (Ctrl-C)
"""

import functools
import os
import pathlib
import shutil
import sys
import tempfile

INTERRUPTED_STATUS = 130  # the shell's status for a process ended by SIGINT
# Where the `error:` line goes once `HeldStderr.drop_for_good` has silenced standard error.
_error_line_stream = None


class CommandError(Exception):
    """A failure reported as one `error:` line; `exit_status` is the CLI's exit status."""

    exit_status = 1


class InputError(CommandError):
    """A problem with the user's files or flags; the message is one line that says what to do."""

    exit_status = 2


def check_setting(ok: bool, flag: str, value, why: str) -> None:
    """Raises the `InputError` "--flag=value: why" unless `ok`: how each config group refuses a
    setting that means nothing, in its own `__post_init__`."""
    if not ok:
        raise InputError(f"--{flag}={value}: {why}")


class NoSeedSurvived(CommandError):
    """Every seed of a run diverged, in training or in every validation rollout, so nothing could be
    selected (the run's records are written)."""

    exit_status = 3


class Interrupted(CommandError):
    """Ctrl-C, reported with what was kept (a run's last complete checkpoint)."""

    exit_status = INTERRUPTED_STATUS


class WriteError(CommandError):
    """A file or directory of a run could not be written; nothing written before it is damaged."""

    exit_status = 4

    @classmethod
    def at(cls, path, reason: str) -> "WriteError":
        """The error for `path`, with the free space of its file system (the usual cause is a full disk)."""
        return cls(f"cannot write {path}: {reason} ({_free_space(pathlib.Path(path))} free on that disk)")


def _free_space(path: pathlib.Path) -> str:
    """The free space of the file system holding `path` (or its nearest existing folder), e.g. '1.2 GB'."""
    for folder in (path, *path.parents):
        try:
            free = float(shutil.disk_usage(folder).free)
        except OSError:
            continue
        if free < 1000:
            return f"{free:.0f} bytes"
        for unit in ("kB", "MB", "GB"):
            free /= 1000
            if free < 1000 or unit == "GB":
                return f"{free:.1f} {unit}"
    return "unknown space"


class HeldStderr:
    """Holds what is written to standard error in its `with` block and writes it out at the end.

    It holds file descriptor 2, so also what C++ threads print. A library whose write failed may
    keep reporting the failure from its worker threads, with tracebacks, for a while after it has
    raised (Orbax and TensorStore do): then `drop_for_good()` drops what was held and sends standard
    error to /dev/null for the rest of the process, all but the CLI's `error:` line.
    """

    def __enter__(self) -> "HeldStderr":
        self._discard = False
        sys.stderr.flush()
        self._real, self._held = os.dup(2), tempfile.TemporaryFile()
        os.dup2(self._held.fileno(), 2)
        return self

    def discard(self) -> None:
        """Drops what is held at the end of the block (a failure's noise, which its one line replaces)."""
        self._discard = True

    def drop_for_good(self) -> None:
        global _error_line_stream
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        _error_line_stream = os.fdopen(self._real, "w")
        self._real = None

    def __exit__(self, *exc_info) -> None:
        if self._real is not None:
            sys.stderr.flush()
            os.dup2(self._real, 2)
            os.close(self._real)
            self._held.seek(0)
            held = b"" if self._discard else self._held.read()
            while held:
                held = held[os.write(2, held):]
        self._held.close()


def report_input_errors(main):
    """Wraps an absl `main(argv)`: a `CommandError` becomes `error: <message>` and its exit status,
    Ctrl-C one line and status 130."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except CommandError as e:
            print(f"error: {e}", file=_error_line_stream or sys.stderr, flush=True)
            # Worker threads (Orbax's, of a failed write or of a checkpoint manager being closed) may
            # still be running: end now, so that they can neither block the exit nor print a traceback
            # after the last line. Every file of ours is written (and renamed) synchronously before this.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.exit_status)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED_STATUS)

    return wrapped
