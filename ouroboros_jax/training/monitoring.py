"""Watching a run while it trains: one status line per poll, from the run's own files (docs/cli.md).

`observe` reads what a poll needs from the run directory: the watched seed's TensorBoard
scalars, the run's checkpoints, run.json (the batches per epoch come from there, never from a
constant as in the reference's monitor) and the age of the newest event file. `status` is pure: it
compares those observations with the state kept from the previous polls and returns at most one
line `status=<S> key=value ...` and the new state. `poll` ties them to a JSON state file.

Statuses, first match wins:

- DEAD: the seed has no event file, or the run has written no event for `dead_after_s`
  (DONE instead when the run finished: its manifest is written and its last epoch saved).
- NAN_SPIKE: more than `nan_spike` new skipped steps (`Loss/nan_skip`) since the last poll.
- LOSS_SPIKE: the mean `Loss/spec` of the last 5 windows of 100 steps over that of the 5
  windows before is above `loss_spike`.
- NEW_CKPT, or PLATEAU once `plateau_ckpts` checkpoints in a row have not raised the best
  validation autonomy by `autonomy_margin`: a checkpoint newer than the last one reported; the
  line gives its epoch and the seed's `Val/*` scalars logged at the end of that epoch.
- PLATEAU_LOSS: no new best of that recent spec mean (a 2 % improvement) for `plateau_polls`
  polls; emitted again every `plateau_polls` polls.
- HEARTBEAT: every `heartbeat_every`-th poll otherwise.
"""

import copy
import dataclasses
import json
import math
import pathlib
import time

import numpy as np

from ouroboros_jax.errors import InputError
from ouroboros_jax.training.checkpoints import completed_epochs
from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.outputs import write_json
from ouroboros_jax.training.run_dir import MANIFEST, RUN_INFO, checkpoints_dir, member_folder
from ouroboros_jax.training.run_dir import read_run_info as _read_run_info

STATE_FILE = "monitor_state.json"
VAL_FIELDS = ("autonomy", "spec_corr", "amp_pen", "pitch_pen", "bounded_frac")
_HISTORY = 200  # poll records kept in the state


@dataclasses.dataclass(frozen=True)
class Limits:
    """When a poll reports what (the reference monitor's constants, which assume a poll every 15 minutes)."""

    dead_after_s: float = 1800.0
    nan_spike: int = 50
    loss_spike: float = 2.0
    window: int = 100  # steps per window of the loss means
    n_windows: int = 5  # windows in the recent mean and in the previous one
    spec_margin: float = 0.02  # a new best recent spec mean is 2 % below the old best
    plateau_polls: int = 8
    autonomy_margin: float = 0.02
    plateau_ckpts: int = 2
    heartbeat_every: int = 4


@dataclasses.dataclass(frozen=True)
class Observations:
    """What one poll reads from a run directory.

    Attributes:
      now: poll time, seconds since the Unix epoch.
      events_age_s: seconds since the run (any seed) last wrote an event; None when the watched
        seed has no event file.
      finished: the run has written its manifest and saved its last epoch.
      batches_per_epoch, n_epochs: from run.json.
      last_step: the seed's last logged training step; -1 if none.
      spec, tf: (n,) the seed's `Loss/spec` and `Loss/tf` in step order.
      horizon: the last `Train/H`; None if none.
      nan_skips: the seed's skipped steps so far.
      checkpoints: completed epochs with a checkpoint, ascending.
      val: completed epochs (of `checkpoints`) -> the seed's `Val/*` at the end of that epoch,
        keys `VAL_FIELDS`; epochs the seed was not scored at (culled or stopped) are absent.
    """

    now: float
    events_age_s: float | None
    finished: bool
    batches_per_epoch: int
    n_epochs: int
    last_step: int
    spec: np.ndarray
    tf: np.ndarray
    horizon: float | None
    nan_skips: int
    checkpoints: tuple[int, ...]
    val: dict[int, dict]


def initial_state() -> dict:
    """The state before the first poll (JSON-able, as every state)."""
    return {"poll": 0, "nan_skips": 0, "best_spec": None, "best_spec_poll": 0, "plateau_loss_poll": 0,
            "last_ckpt_epoch": -1, "best_val_autonomy": None, "ckpts_since_best": 0, "history": []}


def _window_means(values: np.ndarray, limits: Limits) -> tuple[float, float]:
    """Means of the last `n_windows` windows of `window` steps and of the `n_windows` before; NaN if too short."""
    span = limits.window * limits.n_windows
    recent = float(values[-span:].mean()) if len(values) >= span else math.nan
    previous = float(values[-2 * span : -span].mean()) if len(values) >= 2 * span else math.nan
    return recent, previous


def _format(value) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "nan"
    return str(value)


def _line(name: str, fields: dict) -> str:
    return " ".join([f"status={name}", *(f"{k}={_format(v)}" for k, v in fields.items())])


def status(previous: dict, obs: Observations, limits: Limits = Limits()) -> tuple[str | None, dict]:
    """One poll: the status line (None when there is nothing to report) and the new state.

    Args:
      previous: the state after the last poll (`initial_state()` before the first); not modified.
      obs: this poll's observations.
      limits: the thresholds.

    Returns:
      (line, state).
    """
    state = {**initial_state(), **copy.deepcopy(previous)}
    state["poll"] += 1
    poll = state["poll"]
    name, fields = None, {}
    if obs.events_age_s is None:
        name, fields = "DEAD", {"reason": "no_events_file", "poll": poll}
    else:
        recent, before = _window_means(obs.spec, limits)
        ratio = recent / before if before > 0 else math.nan
        tf_recent, _ = _window_means(obs.tf, limits)
        best = state["best_spec"]
        if math.isfinite(recent) and (best is None or recent < best * (1 - limits.spec_margin)):
            state["best_spec"], state["best_spec_poll"] = recent, poll
        elif math.isfinite(recent) and recent < best:
            state["best_spec"] = recent  # a smaller gain lowers the bar but does not count as progress
        base = {"poll": poll, "epoch": (obs.last_step + 1) // obs.batches_per_epoch, "n_epochs": obs.n_epochs,
                "H": -1 if obs.horizon is None else int(obs.horizon), "spec_recent5": recent, "spec_ratio": ratio,
                "tf_recent5": tf_recent, "nan_skips": obs.nan_skips,
                "best_spec": math.nan if state["best_spec"] is None else state["best_spec"],
                "polls_since_best": poll - state["best_spec_poll"]}
        name, fields = _classify(state, obs, limits, ratio, base)
    state["history"] = [*state["history"], {"poll": poll, "time": obs.now, "status": name, **{
        k: fields.get(k) for k in ("epoch", "spec_recent5", "tf_recent5", "nan_skips", "ckpt_epoch", "val_autonomy")
    }}][-_HISTORY:]
    return (None if name is None else _line(name, fields)), state


def _classify(state: dict, obs: Observations, limits: Limits, ratio: float, base: dict) -> tuple[str | None, dict]:
    """The status of a seed with events, in priority order; updates `state` in place."""
    poll = state["poll"]
    if obs.events_age_s > limits.dead_after_s:
        if obs.finished:
            return "DONE", base
        return "DEAD", {"reason": "no_new_events", "idle_s": int(obs.events_age_s), **base}
    new_skips = obs.nan_skips - state["nan_skips"]
    state["nan_skips"] = obs.nan_skips
    if new_skips > limits.nan_spike:
        return "NAN_SPIKE", {"new_nan_skips": new_skips, **base}
    if ratio > limits.loss_spike:
        return "LOSS_SPIKE", base
    pending = [e for e in obs.checkpoints if e > state["last_ckpt_epoch"]]
    for epoch in pending:
        autonomy = obs.val.get(epoch, {}).get("autonomy", math.nan)
        best = state["best_val_autonomy"]
        if math.isfinite(autonomy) and (best is None or autonomy > best + limits.autonomy_margin):
            state["best_val_autonomy"], state["ckpts_since_best"] = autonomy, 0
        elif epoch in obs.val:  # a checkpoint without the seed (culled before it) says nothing about it
            state["ckpts_since_best"] += 1
        state["last_ckpt_epoch"] = epoch
    if pending:
        newest = pending[-1]
        val = obs.val.get(newest, {})
        best = state["best_val_autonomy"]
        fields = {"ckpt_epoch": newest, "new_ckpts": len(pending),
                  **{f"val_{k}": float(val.get(k, math.nan)) for k in VAL_FIELDS},
                  "best_val_autonomy": math.nan if best is None else best,
                  "ckpts_since_best": state["ckpts_since_best"], **base}
        return ("PLATEAU" if state["ckpts_since_best"] >= limits.plateau_ckpts else "NEW_CKPT"), fields
    # Polls without any recent spec mean yet (a short run) are not a plateau.
    if (state["best_spec"] is not None and poll - state["best_spec_poll"] >= limits.plateau_polls
            and poll - state["plateau_loss_poll"] >= limits.plateau_polls):
        state["plateau_loss_poll"] = poll
        return "PLATEAU_LOSS", base
    if poll % limits.heartbeat_every == 0:
        return "HEARTBEAT", base
    return None, base


def _by_step(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values in step order; where a resumed run logged a step twice, the later one."""
    order = np.argsort(steps, kind="stable")
    steps, values = steps[order], values[order]
    last = np.append(steps[1:] != steps[:-1], True)
    return steps[last], values[last]


def read_run_info(run_dir: pathlib.Path) -> dict:
    """run.json of a training run, checked for what monitoring needs."""
    info = _read_run_info(run_dir)
    if not info.get("batches_per_epoch"):
        raise InputError(f"--run_dir={run_dir}: {RUN_INFO} has no batches_per_epoch; a converted run has no training "
                         "to watch")
    return info


def observe(run_dir, seed: int, now: float | None = None) -> Observations:
    """Reads one poll's observations of seed `seed` of the run in `run_dir`.

    Raises:
      InputError: not a training run's directory, or a seed the run does not have.
    """
    run_dir = pathlib.Path(run_dir)
    info = read_run_info(run_dir)
    if seed not in info["seeds"]:
        raise InputError(f"--seed={seed}: the run has seeds {info['seeds']}")
    now = time.time() if now is None else now
    bpe, n_epochs = int(info["batches_per_epoch"]), int(info["n_epochs"])
    seed_dir = run_dir / member_folder(info, seed)
    has_events = any(seed_dir.glob("events.out.tfevents.*"))
    newest = max((p.stat().st_mtime for p in run_dir.glob("*/events.out.tfevents.*")), default=None)
    scalars = {tag: _by_step(*pair) for tag, pair in read_scalars(seed_dir).items()} if has_events else {}
    empty = (np.zeros(0, int), np.zeros(0))
    spec_steps, spec = scalars.get("Loss/spec", empty)
    checkpoints = tuple(completed_epochs(checkpoints_dir(run_dir)))
    val = {}
    for epoch in checkpoints:
        end = epoch * bpe - 1  # the last step of the epoch, where the run logs Val/*
        fields = {}
        for name in VAL_FIELDS:
            steps, values = scalars.get(f"Val/{name}", empty)
            hit = np.flatnonzero(steps == end)
            if hit.size:
                fields[name] = float(values[hit[0]])
        if "autonomy" in fields:
            val[epoch] = fields
    horizon = scalars.get("Train/H", empty)[1]
    return Observations(
        now=now, events_age_s=(now - newest) if has_events else None,
        finished=(run_dir / MANIFEST).is_file() and bool(checkpoints) and checkpoints[-1] >= n_epochs,
        batches_per_epoch=bpe, n_epochs=n_epochs, last_step=int(spec_steps[-1]) if len(spec_steps) else -1,
        spec=spec, tf=scalars.get("Loss/tf", empty)[1], horizon=float(horizon[-1]) if len(horizon) else None,
        nan_skips=int(scalars.get("Loss/nan_skip", empty)[1].sum()), checkpoints=checkpoints, val=val,
    )


def poll(run_dir, seed: int = 0, state_path=None, limits: Limits = Limits(), now: float | None = None) -> str | None:
    """Observes the run, updates the state file and returns the status line (None: nothing to report).

    Args:
      run_dir: the training run's `--out_dir`.
      seed: the seed id to watch.
      state_path: the JSON state kept between polls; default `<run_dir>/monitor_state.json`.
      limits: the thresholds.
      now: poll time (seconds since the Unix epoch); default the clock.

    Raises:
      InputError: see `observe`; also a state file that is not one, or that watches another seed.
    """
    run_dir = pathlib.Path(run_dir)
    state_path = run_dir / STATE_FILE if state_path is None else pathlib.Path(state_path)
    previous = {}
    if state_path.exists():
        try:
            previous = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"--state_path={state_path}: not a monitor state ({e}); delete it to start over") from e
        if previous.get("seed", seed) != seed:
            raise InputError(f"--state_path={state_path}: watches seed {previous['seed']}, not --seed={seed}; pass "
                             "another --state_path")
    line, state = status(previous, observe(run_dir, seed, now), limits)
    write_json(state_path, {**state, "seed": seed})
    return line
