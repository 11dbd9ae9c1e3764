"""The settings of a run: one nested frozen config, every setting defined once, with its flag's
name, default and help (`ouroboros_jax.settings`; the CLI's flags are made from it).

`RunConfig` groups the data (`DataConfig`), the sampler (`SamplerConfig`), the model
(`ModelConfig`), the objective (`ObjectiveConfig`) and the rollout (`RolloutConfig`); its own
fields are the run's: epochs, seeds, optimiser, curriculum, culling, checkpoints and devices.
Every setting is checked once, when the config is made.
"""

import dataclasses
import json
import math

from ouroboros_jax import settings
from ouroboros_jax.data import DataConfig, SamplerConfig
from ouroboros_jax.errors import InputError
from ouroboros_jax.errors import check_setting as _check
from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.objective.curriculum import HORIZON_SCHEDULES
from ouroboros_jax.objective.losses import DEFAULT_STFT_CONFIGS, LossWeights
from ouroboros_jax.ode.dynamics import RolloutConfig
from ouroboros_jax.scoring.evaluation import RANK_STATISTICS
from ouroboros_jax.settings import setting
from ouroboros_jax.training.runtime import MATMUL_PRECISIONS
from ouroboros_jax.training.step import LOSS_MODES, StepConfig
from ouroboros_jax.training.sweep import SWEEPABLE, n_members, parse_sweep

LR_SCHEDULES = ("constant", "cosine")
# What may change when a run is resumed: where it is, how far it goes, how it uses the machine.
_NOT_FINGERPRINTED = ("out_dir", "n_epochs", "seed_chunk", "media_seeds")


def parse_spec_configs(text) -> tuple:
    """'256,64;512,128' (or pairs already) -> ((256, 64), (512, 128))."""
    if not isinstance(text, str):
        return tuple(tuple(pair) for pair in text)
    try:
        pairs = tuple(tuple(int(v) for v in pair.split(",")) for pair in text.split(";") if pair.strip())
    except ValueError:
        pairs = ()
    if not pairs or any(len(p) != 2 for p in pairs):
        raise InputError(f"--spec_configs={text}: expected n_fft,hop pairs separated by ';', e.g. 256,64;512,128")
    return pairs


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """What training minimises (docs/method.md, "Objective"): the loss, its weights and warm-ups, the cold start."""

    loss_mode: str = setting("spectral_rollout", "The method, or the legacy MSE baseline.", choices=LOSS_MODES)
    lam_spec: float = setting(1.0, "Weight of the multi-resolution STFT loss.")
    lam_tf: float = setting(1.0, "Weight of the teacher-forced acceleration anchor.")
    lam_env_log: float = setting(0.0, "Weight of the log-ratio envelope loss.")
    env_log_eps: float = setting(1e-4, "Floor of the log-ratio envelope loss.")
    lam_env: float = setting(0.0, "Weight of the linear envelope L1 loss.")
    env_ms: float = setting(2.0, "Sigma of the envelope filter in ms.")
    spec_configs: tuple = setting(DEFAULT_STFT_CONFIGS, "STFT n_fft,hop pairs separated by ';'.", kind=str,
                                  text=lambda pairs: ";".join(f"{n},{h}" for n, h in pairs), parse=parse_spec_configs)
    spec_warmup_epochs: int = setting(5, "Epochs over which lam_spec ramps up from 0.")
    env_warmup_epochs: int = setting(0, "Epochs over which lam_env and lam_env_log ramp up.")
    ic_noise_rms: float = setting(1e-3, "RMS of the cold-start initial state on ONSET segments.")
    lam: float = setting(1.068, "Kernel-weight penalty base (used by --loss_mode=mse_accel; recorded otherwise).")

    def __post_init__(self):
        _check(self.loss_mode in LOSS_MODES, "loss_mode", self.loss_mode, f"must be one of {LOSS_MODES}")
        _check(all(n >= 1 and h >= 1 for n, h in self.spec_configs), "spec_configs", self.spec_configs,
               "needs positive n_fft,hop pairs")
        for name in ("lam_spec", "lam_tf", "lam_env", "lam_env_log", "ic_noise_rms"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value >= 0, name, value, "must be a number >= 0 (0 turns it off)")
        for name in ("env_ms", "env_log_eps"):  # the envelope's width and floor: 0 makes every step non-finite
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, name, value, "must be a positive number")
        for name in ("spec_warmup_epochs", "env_warmup_epochs"):
            _check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0 (0: no warm-up)")

    def env_sigma(self, sample_rate: float) -> float:
        """Sigma of the envelope filter in samples at `sample_rate`."""
        return self.env_ms / 1000.0 * sample_rate

    def step_config(self, horizon: int, sample_rate: float, rollout: RolloutConfig, use_env: bool | None = None,
                    use_env_log: bool | None = None) -> StepConfig:
        """The static settings of a step of this objective with horizon H `horizon`; the envelope
        terms are computed where their weight is positive (or where `use_env`, `use_env_log` say:
        a sweep's members may differ)."""
        return StepConfig(
            horizon=horizon, loss_mode=self.loss_mode, stft_configs=self.spec_configs,
            env_sigma=self.env_sigma(sample_rate), env_log_eps=self.env_log_eps, rollout=rollout,
            use_env=self.lam_env > 0 if use_env is None else use_env,
            use_env_log=self.lam_env_log > 0 if use_env_log is None else use_env_log,
            penalty_lam=self.lam if self.loss_mode == "mse_accel" else None,
        )

    @property
    def weights(self) -> LossWeights:
        return LossWeights(self.lam_spec, self.lam_tf, self.lam_env, self.lam_env_log)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; made from the flags by `ouroboros_jax.cli.from_flags`.

    `model.sample_rate` is replaced by the data's sample rate once the data is read, and
    `rollout.step_size` by the model's (`Setup.build`), so that the records of a run (run.json,
    checkpoints) hold what it trained with.
    """

    data: DataConfig = DataConfig("")
    sampler: SamplerConfig = SamplerConfig()
    model: ModelConfig = ModelConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    rollout: RolloutConfig = RolloutConfig()
    out_dir: str = setting("poly_spectral", "Run directory (created; re-running resumes).")
    batch_size: int = setting(8, "Segments per optimisation step.")
    h_min: int = setting(512, "Shortest rollout horizon (samples).")
    h_max: int = setting(2048, "Longest rollout horizon (samples).")
    h_schedule: str = setting("geom", "Horizon curriculum.", choices=HORIZON_SCHEDULES)
    grad_clip: float = setting(5.0, "Global gradient-norm clip.")
    n_epochs: int = setting(50, "Training epochs.")
    lr: float = setting(1e-3, "Adam learning rate.")
    lr_schedule: str = setting("constant", "Learning-rate schedule.", choices=LR_SCHEDULES)
    ema_decay: float = setting(0.0, "Decay per step of an exponential moving average of each member's parameters, "
                               "which scoring, selection and the outputs use instead of the parameters (0: off).")
    n_seeds: int = setting(4, "Random seeds trained side by side.")
    cull_frac: float = setting(0.0, "Cull after this fraction of the epochs (0: no culling).")
    cull_keep: int = setting(2, "Seeds kept by culling.")
    select_by: str = setting("mean", "Statistic of a member's validation autonomy over the vocalisations that culling "
                             "and selection rank by: mean (the reference's) or median.", choices=RANK_STATISTICS)
    save_freq: int = setting(5, "Checkpoint every this many epochs (and at the end).")
    max_saved: int = setting(60, "Checkpoints kept.")
    seed: int = setting(1234, "Seed of the file split, the sampler and the model seeds.")
    sweep: tuple = setting((), f"NAME=v1,v2,...: train every combination of the swept values times --n_seeds seeds "
                           f"as members of one program (repeatable; NAME one of {', '.join(SWEEPABLE)}).", kind=list,
                           text=lambda sweep: [f"{k}={','.join(f'{v:g}' for v in vs)}" for k, vs in sweep],
                           parse=parse_sweep)
    max_consecutive_skips: int = setting(50, "A seed that skips this many steps in a row is stopped.")
    matmul_precision: str = setting("highest", "Precision of every matmul and contraction (encoders, the kernel in "
                                    "every RK4 stage): highest (float32) or default (a GPU may use TF32).",
                                    choices=MATMUL_PRECISIONS)
    # How the run uses the machine and what it logs, not what it computes: not checked on resume.
    seed_chunk: int = setting(0, "Seeds per vmapped chunk of the epoch program, the chunks running one after another "
                              "to bound its memory; a multiple of the device count; 0: every seed at once.")
    media_seeds: int = setting(4, "At each checkpoint, TensorBoard audio and figures for this many of the best "
                               "active seeds (0: none).")

    def __post_init__(self):
        for name in ("n_epochs", "n_seeds", "batch_size", "h_max", "max_saved", "max_consecutive_skips"):
            _check(getattr(self, name) >= 1, name, getattr(self, name), "must be at least 1")
        _check(self.seed >= 0, "seed", self.seed, "must not be negative")
        _check(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "must be a positive number")
        _check(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "must be in [0, 1); 0 turns the average off")
        _check(self.select_by in RANK_STATISTICS, "select_by", self.select_by,
               f"must be one of {RANK_STATISTICS}")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", self.lr_schedule, f"must be one of {LR_SCHEDULES}")
        _check(self.matmul_precision in MATMUL_PRECISIONS, "matmul_precision", self.matmul_precision,
               f"must be one of {MATMUL_PRECISIONS}")
        _check(all(name in SWEEPABLE for name, _ in self.sweep), "sweep", self.sweep,
               f"only {', '.join(SWEEPABLE)} can be swept")
        _check(self.data.n_val_vocs >= 1, "n_val_vocs", self.data.n_val_vocs,
               "seeds are culled and selected by their score on the validation vocalisations: at least 1 is needed")
        _check(self.data.n_test_vocs >= 1, "n_test_vocs", self.data.n_test_vocs,
               "the selected model is judged by its score on the test vocalisations: at least 1 is needed")
        _check(0 <= self.cull_frac < 1, "cull_frac", self.cull_frac, "must be in [0, 1); 0 disables culling")
        members = "members (seeds times swept settings)" if self.sweep else "seeds"
        _check(self.cull_frac == 0 or 1 <= self.cull_keep < self.n_members, "cull_keep", self.cull_keep,
               f"culling (--cull_frac={self.cull_frac}) must keep between 1 and {self.n_members - 1} of the run's "
               f"{self.n_members} {members}")
        _check(not self.culling or self.cull_epoch < self.n_epochs, "cull_frac", self.cull_frac,
               f"culls after epoch {self.cull_epoch} of --n_epochs={self.n_epochs}, which leaves no epoch to train "
               "the kept seeds; lower --cull_frac or raise --n_epochs")
        # A constant horizon is h_max: h_min is not used then (the reference's smoke recipe leaves it at 512).
        _check(self.h_schedule == "const" or 1 <= self.h_min <= self.h_max, "h_min", self.h_min,
               f"must be in [1, --h_max={self.h_max}]")
        _check(self.save_freq >= 0, "save_freq", self.save_freq, "must be >= 0 (0: only at the end)")
        _check(self.grad_clip > 0, "grad_clip", self.grad_clip, "must be positive")
        _check(self.seed_chunk >= 0, "seed_chunk", self.seed_chunk, "must be >= 0 (0: every seed in one vmapped chunk)")
        _check(self.media_seeds >= 0, "media_seeds", self.media_seeds, "must be >= 0 (0: no audio or figures)")

    @property
    def n_members(self) -> int:
        """The stack's length: --n_seeds times the swept combinations."""
        return n_members(self.sweep, self.n_seeds)

    @property
    def culling(self) -> bool:
        return 0 < self.cull_frac < 1 and self.cull_keep < self.n_members

    @property
    def cull_epoch(self) -> int:
        return max(1, round(self.cull_frac * self.n_epochs))

    @classmethod
    def of(cls, **values) -> "RunConfig":
        """A config from settings named by their flags, e.g. `RunConfig.of(data_dir="@example", lr=3e-3)`;
        the others keep their defaults. Values are the fields' own (tuples, not flag text)."""
        unknown = sorted(set(values) - {s.flag for s in settings.settings_of(cls)})
        if unknown:
            raise TypeError(f"RunConfig has no setting {', '.join(unknown)}")
        return settings.build(cls, values, parse=False)

    def setting(self, flag: str):
        """The value of the setting whose flag is `flag` (e.g. "lam_tf"), wherever it is grouped."""
        return settings.flat(self)[flag]

    @classmethod
    def from_record(cls, fields: dict, out_dir: str, n_epochs: int) -> "RunConfig":
        """The config whose `fingerprint()` is `fields` (as stored in run.json and checkpoints)."""
        if "objective" not in fields:
            fields = _regrouped(fields)
        config = settings.from_record(cls, fields)
        return dataclasses.replace(config, out_dir=out_dir, n_epochs=n_epochs)

    def fingerprint(self) -> dict:
        """What must not change when a run is resumed: everything but the output dir, the epochs, the
        seed chunk and the media seeds."""
        fields = settings.record(self)
        for name in _NOT_FINGERPRINTED:
            fields.pop(name)
        return json.loads(json.dumps(fields, default=str))


def _regrouped(old: dict) -> dict:
    """A record of a run made before the settings were grouped (flat, with `loss` a list and the
    sampler's settings under `data`), as `RunConfig.fingerprint` records it now."""
    old = dict(old)
    data, model = dict(old.pop("data")), dict(old.pop("model"))
    flat = {**dict(zip(LossWeights._fields, old.pop("loss"))), **old, **data,
            **{"encoder_scan": model.pop("scan_impl"), **model}}
    grouped = settings.record(settings.build(RunConfig, flat, parse=False))
    # What are not settings: the model's sample rate and time constant.
    grouped["model"].update(sample_rate=model.get("sample_rate", 44100.0), tau=model.get("tau"))
    return grouped
