"""How the CLIs report failures: one `error:` line and an exit status per kind (ouroboros_jax/errors.py)."""

import pytest

from ouroboros_jax import errors
from ouroboros_jax.errors import InputError, Interrupted, NoSeedSurvived, WriteError, report_input_errors


@pytest.mark.parametrize("failure,status,line", [
    (InputError("--lr=inf: must be a positive number"), 2, "error: --lr=inf: must be a positive number"),
    (NoSeedSurvived("every seed diverged"), 3, "error: every seed diverged"),
    (WriteError.at("/tmp/run/seed0", "No space left on device"), 4, "error: cannot write /tmp/run/seed0: No space "
                                                                      "left on device ("),
    (Interrupted("interrupted; resume"), 130, "error: interrupted; resume"),
    (KeyboardInterrupt(), 130, "error: interrupted"),
])
def test_each_failure_is_one_error_line_with_its_exit_status(failure, status, line, capsys, monkeypatch):
    def exit_now(code):  # a WriteError ends the process at once (os._exit): here, this test only
        raise SystemExit(code)

    monkeypatch.setattr(errors.os, "_exit", exit_now)

    @report_input_errors
    def main(argv):
        raise failure

    with pytest.raises(SystemExit) as exit_:
        main(["prog"])
    assert exit_.value.code == status
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith(line), captured.err


def test_a_write_error_gives_the_free_space_of_the_nearest_existing_folder(tmp_path):
    message = str(WriteError.at(tmp_path / "not" / "made" / "yet.json", "No space left on device"))
    assert message.startswith(f"cannot write {tmp_path}/not/made/yet.json: No space left on device (")
    free = message.split("(")[1].split(" free on that disk)")[0]
    value, unit = free.split()
    assert float(value) > 0 and unit in ("bytes", "kB", "MB", "GB")
