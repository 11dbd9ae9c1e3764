"""Other libraries' log messages go to `<out_dir>/libraries.log`; the terminal keeps our own lines.

Orbax, absl, JAX and Python's `warnings` report through the `logging` module ("Waiting for
previous save to complete ...", deprecation notices): useful when something goes wrong, noise
in the run's progress. While a run trains, the handlers already there (absl's, on the terminal)
pass only records emitted by this package's modules, and a file handler in the run directory
receives every record (ours too, so the file is the whole story). A log file that cannot be
written (a full disk) is given up silently: the run reports its own write errors where they matter.
"""

import contextlib
import logging
import pathlib

from ouroboros_jax.training.run_dir import LIBRARIES_LOG

_PACKAGE = pathlib.Path(__file__).resolve().parents[1]


def is_ours(record: logging.LogRecord) -> bool:
    """Whether a record was emitted by a module of this package."""
    return pathlib.Path(record.pathname).resolve().is_relative_to(_PACKAGE)


class _QuietFileHandler(logging.FileHandler):
    """Drops what it cannot write (a full disk, a vanished directory) instead of printing a traceback."""

    def emit(self, record):
        with contextlib.suppress(Exception):  # the delayed open happens outside FileHandler's own guard
            super().emit(record)

    def close(self):
        with contextlib.suppress(OSError):  # flushing what a full disk refused fails again
            super().close()

    def handleError(self, record):
        pass


@contextlib.contextmanager
def libraries_logged_to(out_dir: pathlib.Path):
    """Within the block the root logger's handlers (absl's terminal handler) pass only our records;
    every record also goes to `out_dir/libraries.log`."""
    root = logging.getLogger()
    terminal = list(root.handlers)
    to_file = _QuietFileHandler(out_dir / LIBRARIES_LOG, delay=True)  # opened at the first record only
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d] %(message)s"))
    logging.captureWarnings(True)  # Python warnings become records of "py.warnings"
    for handler in terminal:
        handler.addFilter(is_ours)
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for handler in terminal:
            handler.removeFilter(is_ours)
        logging.captureWarnings(False)
