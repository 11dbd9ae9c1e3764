"""Syllable types for unlabelled song: clustering syllables by spectrogram shape and duration.

A birdsong researcher tells syllable types apart by the shape of their spectrograms (pitch,
harmonics, frequency modulation over the syllable) and by their length. The features follow
that, as in the field's clustering workflows (log-mel spectrograms, reduced, then clustered):

1. Log-mel spectrogram of the syllable alone: Hann window of `WINDOW_MS`, one frame every
   `HOP_MS`, power in `N_MELS` mel bands over the segmenter's band, in dB below the syllable's
   own peak and floored at `FLOOR_DB`, so the recording gain does not matter.
2. Shape: every band resampled to `N_STEPS` points from onset to offset, so syllables of one
   type sung a little faster or slower still match (duration enters separately).
3. The flattened shapes reduced to their first `N_COMPONENTS` principal components, plus the log
   duration, z-scored and scaled to the spread of the first component: duration weighs as much
   as the strongest spectral difference.

The types are the clusters of scikit-learn's `KMeans` (k-means++, `N_INIT` restarts, seeded), K
given or chosen ("auto") as the K in 2..`MAX_AUTO_TYPES` with the highest silhouette score. They
are named a, b, c, ... by decreasing size; the same syllables and seed give the same labels.
"""

import dataclasses
import string
from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from ouroboros_jax.errors import InputError

WINDOW_MS = 8.0
HOP_MS = 2.0
N_MELS = 32
N_STEPS = 20
FLOOR_DB = -60.0
N_COMPONENTS = 10
N_INIT = 10
MAX_AUTO_TYPES = 10
TYPE_NAMES = string.ascii_lowercase


def parse_cluster(value: str) -> int | None:
    """The number of types of `--cluster`: "K" -> K (2 <= K <= 26); "auto" -> None (chosen).

    Raises:
      InputError: anything else.
    """
    if value == "auto":
        return None
    if not value.isdigit() or not 2 <= int(value) <= len(TYPE_NAMES):
        raise InputError(f"--cluster={value}: expected a number of syllable types from 2 to {len(TYPE_NAMES)}, "
                         "or auto")
    return int(value)


def mel_filterbank(n_fft: int, sample_rate: float, min_freq_hz: float, max_freq_hz: float) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), each normalised to unit sum.

    Returns:
      (N_MELS, n_fft // 2 + 1) weights of the rfft bins.
    """
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    edges = 700.0 * (10.0 ** (np.linspace(mel(min_freq_hz), mel(min(max_freq_hz, sample_rate / 2)), N_MELS + 2)
                              / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))
    return weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def syllable_shape(x: np.ndarray, sample_rate: float, filterbank: np.ndarray) -> np.ndarray:
    """One syllable's time-normalised log-mel spectrogram.

    Args:
      x: (n,) the syllable's samples, onset to offset.
      sample_rate: Hz.
      filterbank: (N_MELS, n_fft // 2 + 1) from `mel_filterbank`, n_fft = 2 windows.

    Returns:
      (N_MELS, N_STEPS) dB below the syllable's peak, in [FLOOR_DB, 0].
    """
    window = max(2, round(WINDOW_MS * 1e-3 * sample_rate))
    hop = max(1, round(HOP_MS * 1e-3 * sample_rate))
    padded = np.pad(np.asarray(x, np.float64), (window // 2, window - window // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, window)[::hop]
    # Zero-padding to two windows halves the bin spacing, so the narrow low mel bands hold bins.
    power = np.abs(np.fft.rfft(frames * np.hanning(window), n=2 * window, axis=-1)) ** 2
    db = 10.0 * np.log10(filterbank @ power.T + 1e-20)
    db = np.maximum(db - db.max(), FLOOR_DB)
    steps = np.linspace(0.0, db.shape[1] - 1, N_STEPS)
    return np.stack([np.interp(steps, np.arange(db.shape[1]), band) for band in db])


def syllable_features(snippets: Sequence[np.ndarray], sample_rate: float, min_freq_hz: float,
                      max_freq_hz: float) -> tuple[np.ndarray, np.ndarray]:
    """Shape and duration of every syllable, before reduction.

    Args:
      snippets: K syllables' samples, each onset to offset.
      sample_rate: Hz.
      min_freq_hz, max_freq_hz: the band of the mel filters (the segmenter's band).

    Returns:
      (shapes, log_durations): (K, N_MELS * N_STEPS) and (K,) log seconds.
    """
    window = max(2, round(WINDOW_MS * 1e-3 * sample_rate))
    filterbank = mel_filterbank(2 * window, sample_rate, min_freq_hz, max_freq_hz)
    shapes = np.stack([syllable_shape(s, sample_rate, filterbank).ravel() for s in snippets])
    return shapes, np.log(np.array([len(s) / sample_rate for s in snippets]))


@dataclasses.dataclass(frozen=True)
class SyllableTypes:
    """The result of clustering K syllables.

    Attributes:
      labels: (K,) str, each syllable's type: "a" the most frequent, then "b", ...
      silhouette: mean silhouette score of the clustering, in [-1, 1] (near 1: well separated).
      typical: per type, the indices of its syllables, nearest the cluster centre first.
    """

    labels: np.ndarray
    silhouette: float
    typical: dict[str, np.ndarray]

    @property
    def n_types(self) -> int:
        return len(self.typical)


def cluster_syllables(shapes: np.ndarray, log_durations: np.ndarray, n_types: int | None, seed: int) -> SyllableTypes:
    """Assigns every syllable a type (see the module docstring for the method).

    Args:
      shapes: (K, D) from `syllable_features`.
      log_durations: (K,) from `syllable_features`.
      n_types: the number of types; None: chosen by silhouette score in 2..MAX_AUTO_TYPES.
      seed: of KMeans; the same seed gives the same labels.

    Raises:
      InputError: fewer syllables than types (auto: fewer than 3 syllables).
    """
    k = len(shapes)
    if k <= (n_types or 2):
        raise InputError(f"--cluster={n_types or 'auto'}: {k} syllables are too few to cluster into "
                         f"{n_types or 'at least 2'} types")
    # A few thousand syllables are a small problem: parallel BLAS/OpenMP threads only wait on each
    # other here (measured 50x slower on a busy 2-core machine), and one thread makes the result
    # independent of the machine's core count.
    with threadpool_limits(limits=1):
        scores = PCA(n_components=min(N_COMPONENTS, k - 1, shapes.shape[1]), svd_solver="full").fit_transform(shapes)
        duration = (log_durations - log_durations.mean()) / max(log_durations.std(), 1e-12)
        features = np.concatenate([scores, duration[:, None] * scores[:, 0].std()], axis=1)
        fits = []
        for n in [n_types] if n_types else range(2, min(MAX_AUTO_TYPES, k - 1) + 1):
            model = KMeans(n_clusters=n, n_init=N_INIT, random_state=seed).fit(features)
            fits.append((silhouette_score(features, model.labels_), n, model))
    silhouette, _, model = max(fits, key=lambda fit: fit[0])
    # Names by decreasing size (ties by cluster index), so "a" is the most frequent type.
    sizes = np.bincount(model.labels_, minlength=model.n_clusters)
    rank = np.empty(model.n_clusters, int)
    rank[np.lexsort((np.arange(model.n_clusters), -sizes))] = np.arange(model.n_clusters)
    labels = np.array([TYPE_NAMES[r] for r in rank[model.labels_]], dtype=np.str_)
    distance = np.linalg.norm(features - model.cluster_centers_[model.labels_], axis=1)
    typical = {}
    for cluster in np.argsort(rank):
        members = np.flatnonzero(model.labels_ == cluster)
        typical[TYPE_NAMES[rank[cluster]]] = members[np.argsort(distance[members], kind="stable")]
    return SyllableTypes(labels=labels, silhouette=float(silhouette), typical=typical)
