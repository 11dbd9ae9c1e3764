"""`python -m ouroboros_jax <command>` (and the `ouroboros-jax` console script, the same function)
runs every command, shows its own --help, and refuses an unknown command in one line."""

import importlib
import subprocess
import sys

import pytest

from ouroboros_jax.__main__ import COMMANDS
from tests.test_run import REPO
from tests.test_settings import CLIS


def run(*args):
    return subprocess.run([sys.executable, "-m", "ouroboros_jax", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_every_command_is_behind_the_entry_point():
    assert sorted(COMMANDS) == sorted(CLIS)
    for name in COMMANDS:
        module = importlib.import_module(f"ouroboros_jax.{name}")
        assert callable(module.main) and module.FLAGS is not None


def test_a_command_s_help_is_its_own():
    result = run("synthesize", "--help")
    first_line = importlib.import_module("ouroboros_jax.synthesize").__doc__.strip().splitlines()[0]
    assert result.returncode == 0 and result.stdout.startswith(first_line) and "--run_dir" in result.stdout


def test_the_command_runs_with_its_flags(tmp_path):
    result = run("monitor", f"--run_dir={tmp_path}")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: --run_dir={tmp_path}: no run.json; pass the --out_dir "
                                                      "of a training run")


@pytest.mark.parametrize("args,said", [((), "no command"), (("trian",), "unknown command 'trian'")])
def test_no_or_an_unknown_command_is_one_line_listing_them(args, said):
    result = run(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {said}; choose one of {', '.join(COMMANDS)}"
    assert all(f"  {name} " in result.stderr for name in COMMANDS)
