"""Other libraries' log records go to libraries.log, ours stay on the terminal, a full disk stays quiet."""

import contextlib
import logging
import sys
import warnings

from ouroboros_jax.training import library_log
from ouroboros_jax.training.library_log import libraries_logged_to
from ouroboros_jax.training.run_dir import LIBRARIES_LOG


def _record(pathname: str, message: str) -> logging.LogRecord:
    return logging.makeLogRecord({"name": "absl", "levelno": logging.WARNING, "levelname": "WARNING",
                                  "pathname": pathname, "msg": message})


@contextlib.contextmanager
def terminal():
    """A root handler on stderr as the test sees it now (capsys swaps sys.stderr between phases)."""
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


def test_library_records_go_to_the_file_and_ours_to_the_terminal(tmp_path, capsys):
    ours = library_log.__file__
    with terminal(), libraries_logged_to(tmp_path):
        logging.getLogger("absl").handle(_record("/site-packages/orbax/checkpoint/async.py",
                                                 "Waiting for previous save to complete"))
        logging.getLogger("absl").handle(_record(ours, "seed 3 diverged"))
        warnings.warn("a deprecation notice from a library", UserWarning, stacklevel=1)
    stderr = capsys.readouterr().err
    assert "seed 3 diverged" in stderr
    assert "Waiting for previous save" not in stderr and "deprecation notice" not in stderr
    written = (tmp_path / LIBRARIES_LOG).read_text()
    assert "Waiting for previous save" in written and "deprecation notice" in written
    assert "seed 3 diverged" in written  # the file tells the whole story

    # After the block the terminal shows everything again and the file receives nothing.
    with terminal():
        logging.getLogger("absl").handle(_record("/site-packages/orbax/x.py", "after the run"))
    assert "after the run" in capsys.readouterr().err
    assert "after the run" not in (tmp_path / LIBRARIES_LOG).read_text()


def test_an_unwritable_log_file_prints_no_traceback(tmp_path, capsys):
    missing = tmp_path / "gone"  # the file cannot be opened: as on a full disk, its records are dropped
    with terminal(), libraries_logged_to(missing):
        logging.getLogger("absl").handle(_record("/site-packages/orbax/x.py", "Waiting for previous save"))
    assert capsys.readouterr().err == ""
    assert not missing.exists()


def test_a_log_file_that_fills_the_disk_fails_quietly_at_close(tmp_path, capsys, monkeypatch):
    with terminal(), libraries_logged_to(tmp_path):
        logging.getLogger("absl").handle(_record("/site-packages/orbax/x.py", "Waiting for previous save"))
        handler = logging.getLogger().handlers[-1]

        def full_disk():
            raise OSError(27, "File too large")

        monkeypatch.setattr(handler.stream, "flush", full_disk)  # the buffered line cannot be written out
    assert capsys.readouterr().err == ""
