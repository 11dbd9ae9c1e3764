"""The flags several benchmarks define alike: one definition, help text and check for each.

Every script holds its own `FLAGS = cli.flag_set()` and passes it here; what differs between the
scripts' grids (a default, the name of the segment-length flag) is an argument. JAX's registries
(model sizes, scan implementations, rollout kernels) are imported inside the functions that use
them, so that baseline_torch.py, which needs only the light helpers, starts without JAX.
"""

import dataclasses

from absl import flags
from timing import apply_quick

from ouroboros_jax import cli
from ouroboros_jax.errors import InputError


def define_quick(flag_values: flags.FlagValues, preset: dict) -> None:
    """--quick, which `begin` turns into `preset`."""
    flags.DEFINE_bool("quick", False, f"Smoke test: {preset} unless those flags are given.", flag_values=flag_values)


def begin(argv: list[str], flag_values: flags.FlagValues, preset: dict) -> None:
    """What a benchmark's `main` does first: refuses positional arguments, and with --quick sets
    `preset`'s flags (those not given on the command line).

    Raises:
      InputError: naming the positional argument.
    """
    cli.check_command(argv, flag_values)
    if flag_values.quick:
        apply_quick(flag_values, preset)


def define_repeats(flag_values: flags.FlagValues, unit: str, repeats: int) -> None:
    """--repeats and --warmup, counted in `unit` (steps, epochs, calls)."""
    flags.DEFINE_integer("repeats", repeats, f"Timed {unit} per configuration.", flag_values=flag_values)
    flags.DEFINE_integer("warmup", 1, f"Untimed {unit} after the first (compiling) one.", flag_values=flag_values)


def define_horizons(flag_values: flags.FlagValues, length_flag: str) -> None:
    """--horizons, the rollout horizons of a step on segments of --`length_flag` samples."""
    flags.DEFINE_list("horizons", ["512", "1024", "2048"], f"Rollout horizons H (<= --{length_flag}).",
                      flag_values=flag_values)
    flags.register_validator("horizons", lambda hs: all(h.isdigit() and int(h) > 0 for h in hs),
                             "every horizon is a positive integer", flag_values=flag_values)


def checked_horizons(flag_values: flags.FlagValues, name: str, length_flag: str) -> list[int]:
    """The horizons of the flag `name` (one integer or a list), after --quick has set the flags.

    Raises:
      InputError: a horizon exceeds the segment length --`length_flag` (the rollout is of the segment).
    """
    value = flag_values[name].value
    horizons = [int(h) for h in value] if isinstance(value, list) else [value]
    length = flag_values[length_flag].value
    if max(horizons) > length:
        shown = ",".join(map(str, horizons))
        raise InputError(f"--{name}={shown}: a horizon cannot exceed --{length_flag}={length}")
    return horizons


def define_model(flag_values: flags.FlagValues, default: str) -> None:
    """--model, one of `synthetic.MODELS`."""
    from synthetic import MODELS

    flags.DEFINE_enum("model", default, sorted(MODELS), "Model size: default, the reference CLI defaults (n_kernels "
                      "15, n_layers 3, d_state 4, expand 10); small: n_kernels 3, n_layers 2, d_state 2, expand 2.",
                      flag_values=flag_values)


def define_segments(flag_values: flags.FlagValues, model: str) -> None:
    """--model, --batch_size and --segment_len: the model and the synthetic batch a step trains on."""
    define_model(flag_values, model)
    flags.DEFINE_integer("batch_size", 8, "Segments per step B.", flag_values=flag_values)
    flags.DEFINE_integer("segment_len", 2205, "Segment length L in samples (0.05 s at 44.1 kHz).",
                         flag_values=flag_values)


def define_epoch(flag_values: flags.FlagValues, model: str, n_batches: int, horizon: int) -> None:
    """`define_segments`, --n_batches, --horizon and --encoder_scan: one epoch program (`SeedProgram`)."""
    from ouroboros_jax.model.selective_scan import SCAN_IMPLS

    define_segments(flag_values, model)
    flags.DEFINE_integer("n_batches", n_batches, "Steps per epoch (the training set is n_batches * batch_size "
                         "segments).", flag_values=flag_values)
    flags.DEFINE_integer("horizon", horizon, "Rollout horizon H (<= segment_len).", flag_values=flag_values)
    flags.DEFINE_enum("encoder_scan", "auto", SCAN_IMPLS, "Selective-scan implementation of the encoders.",
                      flag_values=flag_values)


def epoch_inputs(flag_values: flags.FlagValues) -> tuple:
    """The model and the training set on the device (with its `tf_var`) that `define_epoch`'s flags give.

    Raises:
      InputError: --horizon exceeds --segment_len.
    """
    from synthetic import MODELS, device_training_set

    checked_horizons(flag_values, "horizon", "segment_len")
    model = dataclasses.replace(MODELS[flag_values.model], scan_impl=flag_values.encoder_scan)
    data, tf_var = device_training_set(model, flag_values.n_batches * flag_values.batch_size, flag_values.segment_len)
    return model, data, tf_var


def define_kernels(flag_values: flags.FlagValues) -> None:
    """--encoder_scan, --rollout_gradient and --rollout_kernel: the JAX step's paths to time, as lists."""
    from ouroboros_jax.model.selective_scan import SCAN_IMPLS
    from ouroboros_jax.ode.dynamics import ROLLOUT_KERNELS

    for name, choices, what in (("encoder_scan", SCAN_IMPLS, "Selective-scan implementations of the encoders"),
                                ("rollout_kernel", ROLLOUT_KERNELS, "Rollout kernels")):
        flags.DEFINE_list(name, ["auto"], f"{what}, of {choices}.", flag_values=flag_values)
        flags.register_validator(name, lambda values, choices=choices: set(values) <= set(choices),
                                 f"use some of {choices}", flag_values=flag_values)
    flags.DEFINE_enum("rollout_gradient", "adjoint", ["adjoint", "autodiff"], "How the rollout is differentiated.",
                      flag_values=flag_values)
    flags.register_multi_flags_validator(
        ["rollout_gradient", "rollout_kernel"],
        lambda v: v["rollout_gradient"] != "autodiff" or "numba" not in v["rollout_kernel"],
        "--rollout_kernel=numba has its own adjoint: --rollout_gradient=autodiff needs xla", flag_values=flag_values)
