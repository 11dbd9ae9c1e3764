"""The edge-biased training sampler (docs/data.md): ONSET, OFFSET and MID windows around syllables.

Every annotated syllable offers up to three kinds of fixed-length window:

* ONSET (0): starts `silence_prefix_ms` before the onset, so the model sees the silence-to-song
  transition (the cold-start noise initial condition is applied to these in training);
* OFFSET (1): ends `silence_suffix_ms` after the offset;
* MID (2): back-to-back windows inside [onset + edge, offset - edge].

The pools are then drawn to `max_segs` windows in the proportions of `ratio`, with one seeded
NumPy generator, exactly as the reference does, so counts and order are reproducible.
"""

import dataclasses
import enum
from collections.abc import Sequence

import numpy as np

from ouroboros_jax.data.recordings import Recording
from ouroboros_jax.errors import InputError
from ouroboros_jax.settings import setting


class Category(enum.IntEnum):
    """The kind of a training window."""

    ONSET = 0
    OFFSET = 1
    MID = 2


def parse_ratio(ratio: str | Sequence[float | str]) -> tuple[float, float, float]:
    """ONSET, OFFSET, MID proportions from "0.4,0.4,0.2" or a sequence of three numbers.

    Raises:
      InputError: not three non-negative numbers, or all zero.
    """
    fields = ratio.split(",") if isinstance(ratio, str) else list(ratio)
    problem = f"--ratio={ratio if isinstance(ratio, str) else ','.join(map(str, fields))}"
    try:
        values = tuple(float(v) for v in fields)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise InputError(
            f"{problem}: expected three non-negative numbers ONSET,OFFSET,MID with a positive sum"
        )
    return values


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """The sampler's settings (the reference's entry-point defaults); each field is the training CLI's
    flag of the same name (`ouroboros_jax.settings`).

    `ratio` may be given as "0.4,0.4,0.2"; it is stored as a tuple of three floats.
    """

    context_len: float = setting(0.05, "Training segment length in seconds.")
    edge_ms: float = setting(10.0, "MID windows keep this far from onsets and offsets.")
    silence_prefix_ms: float = setting(25.0, "Audio before the onset in ONSET windows.")
    silence_suffix_ms: float = setting(25.0, "Audio after the offset in OFFSET windows.")
    ratio: tuple[float, float, float] = setting((0.4, 0.4, 0.2), "ONSET,OFFSET,MID proportions.", kind=str,
                                                text=lambda r: ",".join(f"{v:g}" for v in r))
    max_segs: int = setting(6000, "Training segments to draw (<= 0: every window).")

    def __post_init__(self):
        object.__setattr__(self, "ratio", parse_ratio(self.ratio))
        if not self.context_len > 0:
            raise InputError(f"--context_len={self.context_len}: must be a positive number of seconds")
        for name in ("edge_ms", "silence_prefix_ms", "silence_suffix_ms"):
            if not getattr(self, name) >= 0:
                raise InputError(f"--{name}={getattr(self, name)}: must not be negative")


@dataclasses.dataclass(frozen=True)
class WindowSizes:
    """The sampler's lengths in samples at one sample rate."""

    length: int  # Lseg, the window length
    prefix: int  # pre, audio before the onset in an ONSET window
    suffix: int  # suff, audio after the offset in an OFFSET window
    edge: int  # margin kept free of MID windows at each end of a syllable

    @classmethod
    def at(cls, config: SamplerConfig, sample_rate: int) -> "WindowSizes":
        # Python's round (half to even), as the reference: 25 ms at 44.1 kHz is 1102, not 1103.
        return cls(
            length=int(round(config.context_len * sample_rate)),
            prefix=int(round(config.silence_prefix_ms / 1000.0 * sample_rate)),
            suffix=int(round(config.silence_suffix_ms / 1000.0 * sample_rate)),
            edge=int(round(config.edge_ms / 1000.0 * sample_rate)),
        )


def window_starts(
    syllables: np.ndarray, sample_rate: int, n_samples: int, sizes: WindowSizes
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First samples of the ONSET, OFFSET and MID windows of one recording.

    Args:
      syllables: (K, 2) onset/offset seconds.
      sample_rate: in Hz.
      n_samples: length of the recording; windows must lie inside it.
      sizes: window sizes in samples.

    Returns:
      (onset_starts, offset_starts, mid_starts), int64 arrays in syllable order (MID windows of
      one syllable consecutive), each window [start, start + sizes.length).
    """
    onsets = np.array([int(round(t * sample_rate)) for t in syllables[:, 0]], dtype=np.int64)
    offsets = np.array([int(round(t * sample_rate)) for t in syllables[:, 1]], dtype=np.int64)
    length = sizes.length
    onset_starts = onsets - sizes.prefix
    keep = (onset_starts >= 0) & (onset_starts + length <= n_samples) & (onset_starts + length > onsets)
    offset_starts = offsets + sizes.suffix - length
    keep_off = (offset_starts >= 0) & (offsets + sizes.suffix <= n_samples) & (offset_starts < offsets)
    mid_ends = np.minimum(offsets - sizes.edge, n_samples)
    mid_starts = [np.arange(on + sizes.edge, end - length + 1, length) for on, end in zip(onsets, mid_ends)]
    return (
        onset_starts[keep],
        offset_starts[keep_off],
        np.concatenate(mid_starts).astype(np.int64) if mid_starts else np.zeros(0, np.int64),
    )


def category_counts(ratio: Sequence[float], max_segs: int) -> np.ndarray:
    """Windows to draw per category: round(ratio * max_segs), the last adjusted so the total is exact.

    Returns:
      (3,) int64, e.g. [2400, 2400, 1200] for ratio (0.4, 0.4, 0.2) and max_segs 6000.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    counts = np.round(ratio / ratio.sum() * max_segs).astype(np.int64)
    counts[-1] = max_segs - counts[:-1].sum()
    return counts


@dataclasses.dataclass(frozen=True)
class Segments:
    """Training windows drawn by the sampler.

    Attributes:
      x: (N, L) float32 audio windows.
      categories: (N,) int32 `Category` values.
      pool_sizes: (3,) int64, how many distinct ONSET, OFFSET, MID windows the recordings offered.
      sources: (N, 2) int64 provenance of each window: (index of its recording, first sample).
    """

    x: np.ndarray
    categories: np.ndarray
    pool_sizes: np.ndarray
    sources: np.ndarray


def sample_segments(recordings: Sequence[Recording], config: SamplerConfig, seed: int) -> Segments:
    """Draws the edge-biased training windows from annotated recordings (docs/data.md, "The edge-biased sampler").

    Per category, `counts[c]` pool indices are drawn with `default_rng(seed).choice`,
    without replacement unless the pool is smaller than the count; empty pools are skipped (the
    total can then fall short of `max_segs`). All drawn windows are then shuffled by the same
    generator. With `max_segs <= 0` every pooled window is returned, shuffled.

    Args:
      recordings: annotated recordings sharing one sample rate, in file order.
      config: the sampler's settings.
      seed: the seed of the draw (`--seed`).

    Returns:
      The windows, their categories, the pool sizes and where each window came from. N = 0 if
      no window fits (and L = 0 without recordings).
    """
    if not recordings:
        return Segments(np.zeros((0, 0), np.float32), np.zeros(0, np.int32), np.zeros(3, np.int64),
                        np.zeros((0, 2), np.int64))
    rng = np.random.default_rng(seed)
    sizes = WindowSizes.at(config, recordings[0].sample_rate)
    # pools[c] is a (P, 2) table of (recording index, start), in file and syllable order.
    per_recording = [window_starts(r.syllables, r.sample_rate, len(r.audio), sizes) for r in recordings]
    pools = [
        np.array(
            [(i, s) for i, starts in enumerate(per_recording) for s in starts[c]], dtype=np.int64
        ).reshape(-1, 2)
        for c in Category
    ]
    pool_sizes = np.array([len(p) for p in pools], dtype=np.int64)
    if config.max_segs <= 0:
        drawn = [(pools[c], c) for c in Category]
    else:
        drawn = []
        for c, n in zip(Category, category_counts(config.ratio, config.max_segs)):
            if pool_sizes[c] == 0 or n <= 0:
                continue
            idx = rng.choice(pool_sizes[c], size=n, replace=n > pool_sizes[c])
            drawn.append((pools[c][idx], c))
    table = np.concatenate([t for t, _ in drawn]) if drawn else np.zeros((0, 2), np.int64)
    categories = (
        np.concatenate([np.full(len(t), c, np.int32) for t, c in drawn]) if drawn else np.zeros(0, np.int32)
    )
    order = rng.permutation(len(table))
    table, categories = table[order], categories[order]
    x = np.zeros((len(table), sizes.length), dtype=np.float32)
    for k, (i, start) in enumerate(table):
        x[k] = recordings[i].audio[start : start + sizes.length]
    return Segments(x=x, categories=categories, pool_sizes=pool_sizes, sources=table)
