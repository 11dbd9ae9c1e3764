"""What a run checks and tells about its data before it trains.

`check_run_fits_data` makes every check of the settings against the data that can be made before
training (the data's own checks are `data.checks`; docs/data.md, "Bad input", lists both):
errors for a rollout horizon longer than the training segments and a --batch_size above their
number (validation and test files without enough vocalisations are refused by the split); warnings
for --spec_configs entries that no horizon of the run reaches and for horizons that no entry fits
(those epochs use a fallback STFT, docs/method.md "Objective"). `describe_data` gives the console
lines the reference prints: the split sizes and the ONSET, OFFSET and MID counts.
"""

import numpy as np
from absl import logging

from ouroboros_jax.data import Category, TrainingData
from ouroboros_jax.errors import InputError
from ouroboros_jax.objective.curriculum import distinct_horizons
from ouroboros_jax.objective.losses import stft_configs_for_horizon


def check_run_fits_data(config, data: TrainingData) -> None:
    """Checks a run's settings (`RunConfig`) against its data.

    Raises:
      InputError: --h_max above the segment length, or --batch_size above the number of segments.
    """
    n_segments, length = data.x.shape
    if config.h_max > length:
        raise InputError(f"--h_max={config.h_max}: the rollout horizon cannot exceed the segment length {length} "
                         f"samples (--context_len={config.sampler.context_len} s at {data.sample_rate} Hz)")
    if config.batch_size > n_segments:
        raise InputError(f"--batch_size={config.batch_size}: above the {n_segments} training segments; lower it to "
                         f"{n_segments} or less, or draw more segments with --max_segs")
    horizons = distinct_horizons(config.n_epochs, config.h_min, config.h_max, config.h_schedule)
    unused = [f"{n_fft},{hop}" for n_fft, hop in config.objective.spec_configs if n_fft > max(horizons)]
    if unused:
        logging.warning("--spec_configs: %s never used: its n_fft is above the longest rollout horizon of the run, "
                        "%d samples", " and ".join(unused), max(horizons))
    uncovered = [h for h in horizons if not any(n_fft <= h for n_fft, _ in config.objective.spec_configs)]
    if uncovered:
        fallbacks = "; ".join(f"{n_fft},{hop} at H={h}" for h in uncovered
                              for n_fft, hop in stft_configs_for_horizon(config.objective.spec_configs, h))
        logging.warning("--spec_configs: no entry has an n_fft within the rollout horizons %s, so those epochs use "
                        "%s instead (docs/method.md, \"Objective\"); add a shorter entry to choose their STFT",
                        ", ".join(map(str, uncovered)), fallbacks)


def describe_data(data: TrainingData) -> list[str]:
    """The console lines about the data: files per split, training segments per category, vocalisations."""
    files = data.files
    n_files = len(files.train) + len(files.val) + len(files.test)
    counts = np.bincount(data.categories, minlength=len(Category))
    per_category = ", ".join(f"{c.name} {counts[c]}" for c in Category)
    offered = ", ".join(str(n) for n in data.pool_sizes)
    return [
        f"data: {n_files} recordings at {data.sample_rate} Hz: {len(files.train)} training, {len(files.val)} "
        f"validation and {len(files.test)} test files",
        f"training segments: {len(data.x)} of {data.x.shape[1]} samples: {per_category} (the training files offer "
        f"{offered} distinct windows)",
        f"cold-start vocalisations: {_vocalisations(data.val_vocalisations, data.sample_rate)} validation, "
        f"{_vocalisations(data.test_vocalisations, data.sample_rate)} test",
    ]


def _vocalisations(vocalisations, sample_rate: float) -> str:
    """How many, and the range of their lengths and lead-ins: "8 of 110-139 ms (lead-ins 35-62 ms)"."""

    def span(samples) -> str:
        low, high = (round(1000.0 * n / sample_rate) for n in (samples.min(), samples.max()))
        return f"{low}" if low == high else f"{low}-{high}"

    return f"{len(vocalisations)} of {span(vocalisations.lengths)} ms (lead-ins {span(vocalisations.lead_ins)} ms)"
