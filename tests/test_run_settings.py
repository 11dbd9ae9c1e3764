"""Bad flags and settings of the main job: each refused in one line, before anything is written
(docs/cli.md, "Exit statuses")."""

import subprocess
import sys

import pytest
from absl import flags as absl_flags

from ouroboros_jax import cli
from ouroboros_jax.errors import InputError
from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.training.config import RunConfig
from tests.test_run import REPO, run_cli
from tests.test_settings import parsed


@pytest.mark.parametrize("flags,message", [
    (["--h_max=4096"], "--h_max=4096: the rollout horizon cannot exceed the segment length"),
    (["--data_dir=/no/such/dir"], "/no/such/dir"),
    (["--syllables=C"], "--syllables=C: no syllable is labelled C in --data_dir=@example; the labels there are a (89), "
                        "b (71), c (68), d (39), e (18), f (2)"),
    (["--n_epochs=abc"], "flag --n_epochs=abc: invalid literal for int()"),  # absl's own: one line and status 2 too
    (["--batch_size=1000"], "--batch_size=1000: above the 256 training segments"),
    (["--coordinator_address=localhost:1"], "--coordinator_address=localhost:1: needs --num_processes and "
                                            "--process_id"),
])
def test_bad_flags_are_one_line_errors(tmp_path, flags, message):
    """The CLI's path for each kind of bad input (a setting checked against the data, a data
    folder, absl's parsing, the processes' flags): one line, status 2, nothing written."""
    result = run_cli("--flagfile=experiments/demo.flags", f"--out_dir={tmp_path / 'bad'}", *flags)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "bad" / "selected_model.json").exists()


@pytest.mark.parametrize("flags,message", [
    (["--n_seeds=2", "--cull_frac=0.5", "--cull_keep=2"], "--cull_keep=2: culling"),
    (["--h_min=600", "--h_max=300"], "--h_min=600"),
    (["--ratio=1,2"], "--ratio"),
    (["--spec_configs=256"], "--spec_configs=256"),
    (["--annotation_format=praat"], "--annotation_format=praat: not a format we read"),
    (["--bound_v=0"], "--bound_v=0.0: must be a positive number"),
    (["--drive_lowpass_ms=-1"], "--drive_lowpass_ms=-1.0: must be >= 0"),
    (["--ic_noise_rms=-1"], "--ic_noise_rms=-1.0: must be a number >= 0"),
    (["--lam_spec=-1"], "--lam_spec=-1.0: must be a number >= 0"),
    (["--lam_tf=nan"], "--lam_tf=nan: must be a number >= 0"),
    (["--lam_env=1", "--env_ms=0"], "--env_ms=0.0: must be a positive number"),
    (["--spec_warmup_epochs=-3"], "--spec_warmup_epochs=-3: must be >= 0"),
    (["--bound_x=inf"], "--bound_x=inf: must be a positive number"),
    (["--seed_chunk=-1"], "--seed_chunk=-1: must be >= 0"),
    (["--media_seeds=-1"], "--media_seeds=-1: must be >= 0"),
    (["--sweep=momentum=0.9"], "--sweep=momentum=0.9: expected NAME=v1,v2,... with NAME one of lr,"),
])
def test_bad_settings_are_refused_when_the_config_is_built(flags, message):
    """Settings wrong in themselves are refused by the config the flags build, before any data is
    read; the CLI prints such an InputError as the one line above (same path as --h_max=4096)."""
    with pytest.raises(InputError) as refused:
        cli.from_flags(RunConfig, parsed(RunConfig, "--flagfile=experiments/demo.flags", *flags))
    assert message in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("make,message", [
    (lambda: ModelConfig(n_kernels=0), "--n_kernels=0: must be at least 1"),
    (lambda: ModelConfig(d_conv=-2), "--d_conv=-2: must be at least 1"),
    (lambda: RolloutConfig(bound_x=0.0), "--bound_x=0.0: must be a positive number"),
    (lambda: RolloutConfig(deer_max_iter=0), "--deer_max_iter=0: must be at least 1"),
])
def test_each_config_group_refuses_its_own_bad_settings(make, message):
    """A model or a rollout built by library code meets the same checks as one built from flags."""
    with pytest.raises(InputError, match=f"^{message}"):
        make()


def test_a_flag_outside_its_choices_is_refused_by_absl():
    with pytest.raises(absl_flags.IllegalFlagValueError, match="value should be one of <highest|default>"):
        parsed(RunConfig, "--matmul_precision=tf32")


def test_the_reference_recipe_asks_for_its_data_dir(tmp_path):
    result = run_cli("--flagfile=experiments/blk445.flags", f"--out_dir={tmp_path / 'blk445'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: --data_dir is required" in result.stderr


def test_the_reference_s_rollout_backends_run_as_the_scan(tmp_path):
    script = ("import sys; from ouroboros_jax import train; "
              "train.FLAGS(sys.argv); print(train.config_from_flags().rollout.backend)")
    result = subprocess.run([sys.executable, "-c", script, "--data_dir=@example", "--rollout_backend=cudagraph"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "scan"
    assert "--rollout_backend=cudagraph: the reference's eager, compile and cudagraph backends run the same RK4 " \
           "loop, which here is one lax.scan" in result.stderr


