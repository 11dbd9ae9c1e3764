"""Errors a user can cause, and how command-line entry points report them.

A bad file or flag raises `InputError` with one line naming the file or flag and the fix. The
CLIs wrap their `main` with `report_input_errors`, which prints that line (no traceback) and
exits non-zero.
"""

import functools
import sys


class InputError(Exception):
    """A problem with the user's files or flags; the message is one line that says what to do."""


def report_input_errors(main):
    """Wraps an absl `main(argv)`: an `InputError` becomes `error: <message>` and exit status 2."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except InputError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped
