"""The settings of a run, checked once when they are made (DESIGN "Conventions": configuration
is frozen dataclasses built from flags in one place, `ouroboros_jax.train`)."""

import dataclasses
import json
import math

from ouroboros_jax.data import DataConfig
from ouroboros_jax.dynamics import ROLLOUT_KERNELS
from ouroboros_jax.errors import InputError
from ouroboros_jax.losses import DEFAULT_STFT_CONFIGS, LossWeights
from ouroboros_jax.model.ouroboros import ModelConfig
from ouroboros_jax.training.runtime import MATMUL_PRECISIONS
from ouroboros_jax.training.step import LOSS_MODES, ROLLOUT_BACKENDS
from ouroboros_jax.training.sweep import SWEEPABLE, n_members

LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; built from the flags in one place (`ouroboros_jax.train`).

    `model.sample_rate` is replaced by the data's sample rate once the data is read, so that the
    records of a run (run.json, checkpoints) hold the rate it trained at.
    """

    data: DataConfig
    model: ModelConfig = ModelConfig()
    out_dir: str = "poly_spectral"
    n_epochs: int = 50
    lr: float = 1e-3
    lr_schedule: str = "constant"
    n_seeds: int = 4
    cull_frac: float = 0.0
    cull_keep: int = 2
    save_freq: int = 5
    max_saved: int = 60
    batch_size: int = 8
    loss: LossWeights = LossWeights()
    env_ms: float = 2.0
    env_log_eps: float = 1e-4
    spec_configs: tuple = DEFAULT_STFT_CONFIGS
    h_min: int = 512
    h_max: int = 2048
    h_schedule: str = "geom"
    spec_warmup_epochs: int = 5
    env_warmup_epochs: int = 0
    ic_noise_rms: float = 1e-3
    grad_clip: float = 5.0
    bound_x: float = 0.5
    bound_v: float = 1.0
    clamp_stages: bool = True
    unroll: int = 1
    rollout_kernel: str = "auto"
    rollout_backend: str = "scan"
    deer_max_iter: int = 30
    deer_tol: float = 1e-6
    loss_mode: str = "spectral_rollout"
    lam: float = 1.068
    max_consecutive_skips: int = 50
    sweep: tuple = ()  # ((name, (values...)), ...): `ouroboros_jax.training.sweep`
    matmul_precision: str = "highest"
    # How the run uses the machine and what it logs, not what it computes: not checked on resume.
    seed_chunk: int = 0
    media_seeds: int = 4

    def __post_init__(self):
        def check(ok, flag, value, why):
            if not ok:
                raise InputError(f"--{flag}={value}: {why}")

        check(self.n_epochs >= 1, "n_epochs", self.n_epochs, "must be at least 1")
        check(self.n_seeds >= 1, "n_seeds", self.n_seeds, "must be at least 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be at least 1")
        check(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "must be a positive number")
        check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", self.lr_schedule, f"must be one of {LR_SCHEDULES}")
        check(self.loss_mode in LOSS_MODES, "loss_mode", self.loss_mode, f"must be one of {LOSS_MODES}")
        check(self.rollout_backend in ROLLOUT_BACKENDS, "rollout_backend", self.rollout_backend,
              f"must be one of {ROLLOUT_BACKENDS}")
        check(self.data.n_val_vocs >= 1, "n_val_vocs", self.data.n_val_vocs,
              "seeds are culled and selected by their score on the validation vocalisations: at least 1 is needed")
        check(0 <= self.cull_frac < 1, "cull_frac", self.cull_frac, "must be in [0, 1); 0 disables culling")
        check(all(name in SWEEPABLE for name, _ in self.sweep), "sweep", self.sweep,
              f"only {', '.join(SWEEPABLE)} can be swept")
        members = "members (seeds times swept settings)" if self.sweep else "seeds"
        check(self.cull_frac == 0 or 1 <= self.cull_keep < self.n_members, "cull_keep", self.cull_keep,
              f"culling (--cull_frac={self.cull_frac}) must keep between 1 and {self.n_members - 1} of the run's "
              f"{self.n_members} {members}")
        check(not self.culling or self.cull_epoch < self.n_epochs, "cull_frac", self.cull_frac,
              f"culls after epoch {self.cull_epoch} of --n_epochs={self.n_epochs}, which leaves no epoch to train the "
              "kept seeds; lower --cull_frac or raise --n_epochs")
        check(self.h_max >= 1, "h_max", self.h_max, "must be at least 1")
        # A constant horizon is h_max: h_min is not used then (the reference's smoke recipe leaves it at 512).
        check(self.h_schedule == "const" or 1 <= self.h_min <= self.h_max, "h_min", self.h_min,
              f"must be in [1, --h_max={self.h_max}]")
        check(self.save_freq >= 0, "save_freq", self.save_freq, "must be >= 0 (0: only at the end)")
        check(self.max_saved >= 1, "max_saved", self.max_saved, "must be at least 1")
        check(self.grad_clip > 0, "grad_clip", self.grad_clip, "must be positive")
        check(self.bound_x > 0, "bound_x", self.bound_x, "must be positive")
        check(self.bound_v > 0, "bound_v", self.bound_v, "must be positive")
        check(self.unroll >= 1, "unroll", self.unroll, "must be at least 1")
        check(self.rollout_kernel in ROLLOUT_KERNELS, "rollout_kernel", self.rollout_kernel,
              f"must be one of {ROLLOUT_KERNELS}")
        check(self.deer_max_iter >= 1, "deer_max_iter", self.deer_max_iter, "must be at least 1")
        check(self.deer_tol > 0, "deer_tol", self.deer_tol, "must be positive")
        check(self.max_consecutive_skips >= 1, "max_consecutive_skips", self.max_consecutive_skips, "must be >= 1")
        check(self.matmul_precision in MATMUL_PRECISIONS, "matmul_precision", self.matmul_precision,
              f"must be one of {MATMUL_PRECISIONS}")
        check(self.seed_chunk >= 0, "seed_chunk", self.seed_chunk, "must be >= 0 (0: every seed in one vmapped chunk)")
        check(self.media_seeds >= 0, "media_seeds", self.media_seeds, "must be >= 0 (0: no audio or figures)")
        check(all(n >= 1 and h >= 1 for n, h in self.spec_configs), "spec_configs", self.spec_configs,
              "needs positive n_fft,hop pairs")

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
    def from_record(cls, fields: dict, out_dir: str, n_epochs: int) -> "RunConfig":
        """The config whose `fingerprint()` is `fields` (as stored in run.json and checkpoints)."""
        f = dict(fields)
        f["data"] = DataConfig(**{**f["data"], "ratio": tuple(f["data"]["ratio"])})
        f["model"] = ModelConfig(**f["model"])
        f["loss"] = LossWeights(*f["loss"])
        f["spec_configs"] = tuple(map(tuple, f["spec_configs"]))
        f["sweep"] = tuple((name, tuple(values)) for name, values in f.get("sweep", ()))
        return cls(**f, out_dir=out_dir, n_epochs=n_epochs)

    def fingerprint(self) -> dict:
        """What must not change when a run is resumed: everything but the output dir, the epochs, the
        seed chunk and the media seeds."""
        fields = dataclasses.asdict(self)
        for name in ("out_dir", "n_epochs", "seed_chunk", "media_seeds"):
            fields.pop(name)
        return json.loads(json.dumps(fields, default=str))
