"""Hyperparameter sweeps as members of the seed stack (`--sweep=NAME=v1,v2,...`).

A run trains the cartesian product of the swept values times `--n_seeds` seeds as one vmapped
axis: member k has the settings of combination k // n_seeds and seed k % n_seeds (its PRNG key is
seed k's, so a member equals the lone run with its settings and seed). Without a sweep the
members are the seeds. Every swept name is a setting that changes no shape:

- `lr`, `grad_clip`: the optimiser's hyperparameters, held per member in its state
  (`optax.inject_hyperparams`, `step.make_optimizer`);
- `lam_spec`, `lam_tf`, `lam_env`, `lam_env_log`: the loss weights, per member;
- `ic_noise_rms`: the cold-start noise, per member.

`drive_lowpass_ms` is not sweepable: it sets the low-pass filter's radius (its number of taps)
inside the model, which is compiled once for all members; run one sweep per value instead.
"""

import math

import numpy as np

from ouroboros_jax.errors import InputError
from ouroboros_jax.objective.losses import LossWeights

SWEEPABLE = ("lr", "grad_clip", "lam_spec", "lam_tf", "lam_env", "lam_env_log", "ic_noise_rms")
_POSITIVE = ("lr", "grad_clip")  # the others may be 0 (a loss term, or the noise, switched off)


def parse_sweep(texts) -> tuple:
    """`--sweep` values ('lr=1e-3,3e-3', ...) -> ((name, (values...)), ...), in the order given.

    Raises:
      InputError: an unknown name, a name given twice, or a value that is not a number the
        setting allows.
    """
    sweep, seen = [], set()
    for text in texts:
        name, _, values = text.partition("=")
        name = name.strip()
        if name not in SWEEPABLE:
            raise InputError(f"--sweep={text}: expected NAME=v1,v2,... with NAME one of {', '.join(SWEEPABLE)}")
        if name in seen:
            raise InputError(f"--sweep={text}: {name} is swept twice; give all its values in one --sweep")
        try:
            numbers = tuple(float(v) for v in values.split(","))
        except ValueError:
            numbers = ()
        positive = name in _POSITIVE
        if not numbers or not all(math.isfinite(v) and (v > 0 if positive else v >= 0) for v in numbers):
            kind = "positive" if positive else "non-negative"
            raise InputError(f"--sweep={text}: expected {name}=v1,v2,... with {kind} numbers")
        repeated = [v for v in numbers if numbers.count(v) > 1]
        if repeated:
            raise InputError(f"--sweep={text}: {name}={repeated[0]:g} is given twice; its members would train alike")
        seen.add(name)
        sweep.append((name, numbers))
    return tuple(sweep)


def n_members(sweep, n_seeds: int) -> int:
    return n_seeds * math.prod(len(values) for _, values in sweep)


def member_seed(member: int, n_seeds: int) -> int:
    """The seed number of a member (whose PRNG key it uses)."""
    return member % n_seeds


def member_settings(config, member: int) -> dict:
    """The swept settings of a member, name -> value (empty without a sweep)."""
    combo = np.unravel_index(member // config.n_seeds, [len(values) for _, values in config.sweep])
    return {name: values[int(i)] for (name, values), i in zip(config.sweep, combo)}


def member_name(config, member: int) -> str:
    """A member's readable name, also its TensorBoard folder: 'seed3' without a sweep; in a sweep
    its index, settings and seed, e.g. 'm5-lr=0.003-lam_tf=0.5-seed1'."""
    seed = f"seed{member_seed(member, config.n_seeds)}"
    if not config.sweep:
        return seed
    settings = "-".join(f"{k}={v:g}" for k, v in member_settings(config, member).items())
    return f"m{member}-{settings}-{seed}"


def member_label(config, member: int) -> str:
    """How titles and messages name a member: 'seed 3', or in a sweep 'member m5-lr=0.003-seed1'."""
    return f"member {member_name(config, member)}" if config.sweep else f"seed {member}"


def member_values(config, members, name: str) -> np.ndarray:
    """(S,) float32: setting `name` of each member (the swept value, or the run's own)."""
    return np.array([member_settings(config, m).get(name, config.setting(name)) for m in members], np.float32)


def member_loss_weights(config, members) -> LossWeights:
    """The members' loss weights, each field (S,) float32."""
    return LossWeights(*(member_values(config, members, name) for name in LossWeights._fields))


def values_of(config, name: str) -> tuple:
    """Every value setting `name` takes in the run (its swept values, or the run's own)."""
    for swept, values in config.sweep:
        if swept == name:
            return values
    return (config.setting(name),)
