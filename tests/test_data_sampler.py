"""The edge-biased sampler (docs/data.md): window positions, counts, replacement, determinism."""

import pathlib

import numpy as np
import pytest

from ouroboros_jax.data.recordings import Recording
from ouroboros_jax.data.sampler import (
    Category,
    SamplerConfig,
    WindowSizes,
    category_counts,
    parse_ratio,
    sample_segments,
    window_starts,
)
from ouroboros_jax.errors import InputError


def index_recording(syllables, n_samples, sample_rate, offset=0.0, name="a.wav"):
    """A recording whose sample i holds offset + i, so a window reveals where it was cut."""
    audio = offset + np.arange(n_samples, dtype=np.float64)
    return Recording(
        pathlib.Path(name), audio, sample_rate, np.asarray(syllables, dtype=np.float64).reshape(-1, 2)
    )


def evenly_spaced_syllables(n, duration_s, gap_s, start_s=0.1):
    onsets = start_s + np.arange(n) * (duration_s + gap_s)
    return np.stack([onsets, onsets + duration_s], axis=-1)


def test_window_sizes_at_44100_hz_match_the_spec():
    sizes = WindowSizes.at(SamplerConfig(), 44100)
    # 25 ms is 1102.5 samples, which Python rounds to even: 1102.
    assert (sizes.length, sizes.prefix, sizes.suffix, sizes.edge) == (2205, 1102, 1102, 441)


def test_window_positions_by_hand_at_44100_hz():
    sizes = WindowSizes.at(SamplerConfig(), 44100)
    onset_starts, offset_starts, mid_starts = window_starts(np.array([[0.5, 0.7]]), 44100, 88200, sizes)
    # on_i = 22050, off_i = 30870.
    np.testing.assert_array_equal(onset_starts, [22050 - 1102])  # starts pre before the onset
    np.testing.assert_array_equal(offset_starts, [30870 + 1102 - 2205])  # ends suff after the offset
    # Back-to-back windows inside [on + edge, off - edge] = [22491, 30429]: 22491, 24696, 26901.
    np.testing.assert_array_equal(mid_starts, [22491, 24696, 26901])
    assert mid_starts[-1] + 2205 <= 30429 < mid_starts[-1] + 2 * 2205


def test_windows_must_lie_inside_the_file_and_touch_the_syllable():
    sizes = WindowSizes(length=50, prefix=25, suffix=25, edge=10)
    syllables = np.array([[0.010, 0.100], [0.200, 0.260], [0.400, 0.490]])
    onset_starts, offset_starts, mid_starts = window_starts(syllables, 1000, 500, sizes)
    np.testing.assert_array_equal(onset_starts, [175, 375])  # the first onset is too close to the start
    np.testing.assert_array_equal(offset_starts, [75, 235])  # the last offset is too close to the end
    np.testing.assert_array_equal(mid_starts, [20, 410])  # 60 ms leaves 40 ms inside the edges: no MID
    # An ONSET window must end after the onset and an OFFSET window start before the offset.
    long_prefix = WindowSizes(length=50, prefix=60, suffix=60, edge=10)
    onset_starts, offset_starts, _ = window_starts(syllables, 1000, 500, long_prefix)
    assert onset_starts.size == 0 and offset_starts.size == 0


def test_sampled_windows_are_the_audio_at_their_positions():
    config = SamplerConfig(max_segs=0)
    recordings = [
        index_recording(evenly_spaced_syllables(4, 0.2, 0.1), 2000, 1000, offset=0.0),
        index_recording(evenly_spaced_syllables(3, 0.15, 0.1), 1500, 1000, offset=10000.0, name="b.wav"),
    ]
    segments = sample_segments(recordings, config, 1234)
    sizes = WindowSizes.at(config, 1000)
    assert segments.x.shape == (len(segments.categories), 50) and segments.x.dtype == np.float32
    np.testing.assert_array_equal(
        segments.x - segments.x[:, :1], np.broadcast_to(np.arange(50), segments.x.shape)
    )
    for c in Category:
        expected = sorted(
            off + s
            for off, r in zip((0.0, 10000.0), recordings)
            for s in window_starts(r.syllables, 1000, len(r.audio), sizes)[c]
        )
        assert sorted(segments.x[segments.categories == c, 0]) == expected
        assert segments.pool_sizes[c] == len(expected)


def test_counts_follow_the_ratio_without_replacement_when_pools_are_large():
    # 2500 syllables of 200 ms at 1 kHz: 2500 ONSET and OFFSET windows, 7500 MID windows.
    recording = index_recording(evenly_spaced_syllables(2500, 0.2, 0.1), 760_000, 1000)
    segments = sample_segments([recording], SamplerConfig(), 1234)
    np.testing.assert_array_equal(segments.pool_sizes, [2500, 2500, 7500])
    np.testing.assert_array_equal(np.bincount(segments.categories), [2400, 2400, 1200])
    for c in Category:
        starts = segments.x[segments.categories == c, 0]
        assert len(np.unique(starts)) == len(starts)  # no window drawn twice


def test_replacement_only_for_a_pool_smaller_than_its_count():
    # 20 syllables of 2 s: 20 ONSET and OFFSET windows, 39 MID windows each.
    recording = index_recording(evenly_spaced_syllables(20, 2.0, 0.1), 42_500, 1000)
    segments = sample_segments([recording], SamplerConfig(max_segs=100), 1234)
    np.testing.assert_array_equal(segments.pool_sizes, [20, 20, 780])
    np.testing.assert_array_equal(np.bincount(segments.categories), [40, 40, 20])
    onset = segments.x[segments.categories == Category.ONSET, 0]
    mid = segments.x[segments.categories == Category.MID, 0]
    assert len(np.unique(onset)) <= 20 < len(onset)
    assert len(np.unique(mid)) == len(mid)


def test_empty_pools_are_skipped_so_the_total_falls_short():
    # 40 ms syllables leave no room for a 50 ms MID window.
    recording = index_recording(evenly_spaced_syllables(30, 0.04, 0.1), 4500, 1000)
    segments = sample_segments([recording], SamplerConfig(max_segs=100), 1234)
    np.testing.assert_array_equal(np.bincount(segments.categories, minlength=3), [40, 40, 0])


def test_no_recording_or_no_window_gives_empty_segments():
    assert sample_segments([], SamplerConfig(), 1234).x.shape == (0, 0)
    too_short = index_recording([[0.01, 0.02]], 30, 1000)
    segments = sample_segments([too_short], SamplerConfig(), 1234)
    assert segments.x.shape == (0, 50) and segments.categories.shape == (0,)


def reference_sampler(recordings, config, seed):
    """The reference's loop, written out naively: Python lists and per-item draws."""
    rng = np.random.default_rng(seed)
    pools = {0: [], 1: [], 2: []}
    for r in recordings:
        sizes = WindowSizes.at(config, r.sample_rate)
        for on_s, off_s in r.syllables:
            on_i, off_i = int(round(on_s * r.sample_rate)), int(round(off_s * r.sample_rate))
            start = on_i - sizes.prefix
            if start >= 0 and start + sizes.length <= len(r.audio) and start + sizes.length > on_i:
                pools[0].append(r.audio[start : start + sizes.length])
            end = off_i + sizes.suffix
            if end - sizes.length >= 0 and end <= len(r.audio) and end - sizes.length < off_i:
                pools[1].append(r.audio[end - sizes.length : end])
            for s in range(on_i + sizes.edge, off_i - sizes.edge - sizes.length + 1, sizes.length):
                pools[2].append(r.audio[s : s + sizes.length])
    ratio = np.asarray(config.ratio) / np.sum(config.ratio)
    counts = np.round(ratio * config.max_segs).astype(int)
    counts[-1] = config.max_segs - counts[:-1].sum()
    segs, cats = [], []
    for c, n in zip((0, 1, 2), counts):
        if pools[c] and n > 0:
            for i in rng.choice(len(pools[c]), size=n, replace=n > len(pools[c])):
                segs.append(pools[c][i].astype(np.float32))
                cats.append(c)
    order = rng.permutation(len(segs))
    return np.array([segs[i] for i in order]), np.array([cats[i] for i in order])


@pytest.mark.parametrize("seed, max_segs, ratio", [(1234, 300, (0.4, 0.4, 0.2)), (7, 1001, (1, 2, 3.5))])
def test_same_draws_and_order_as_the_reference_loop(seed, max_segs, ratio):
    recordings = [
        index_recording(evenly_spaced_syllables(60, 0.13, 0.05), 11_000, 1000),
        index_recording(evenly_spaced_syllables(25, 0.31, 0.02), 8_500, 1000, offset=1e5, name="b.wav"),
    ]
    config = SamplerConfig(max_segs=max_segs, ratio=ratio)
    segments = sample_segments(recordings, config, seed)
    x, categories = reference_sampler(recordings, config, seed)
    np.testing.assert_array_equal(segments.x, x)
    np.testing.assert_array_equal(segments.categories, categories)


def test_deterministic_for_a_seed_and_different_across_seeds():
    recording = index_recording(evenly_spaced_syllables(50, 0.2, 0.1), 15_200, 1000)
    a, b = (sample_segments([recording], SamplerConfig(max_segs=200), 3) for _ in range(2))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.categories, b.categories)
    c = sample_segments([recording], SamplerConfig(max_segs=200), 4)
    assert not np.array_equal(a.x, c.x)


def test_category_counts():
    np.testing.assert_array_equal(category_counts((0.4, 0.4, 0.2), 6000), [2400, 2400, 1200])
    np.testing.assert_array_equal(category_counts((2, 2, 1), 6000), [2400, 2400, 1200])
    np.testing.assert_array_equal(
        category_counts((1, 1, 1), 100), [33, 33, 34]
    )  # the last takes the remainder


def test_parse_ratio():
    assert parse_ratio("0.4,0.4,0.2") == (0.4, 0.4, 0.2)
    assert parse_ratio(["1", "0", "0"]) == (1.0, 0.0, 0.0)
    assert SamplerConfig(ratio="2,2,1").ratio == (2.0, 2.0, 1.0)


@pytest.mark.parametrize(
    "ratio", ["0.5,0.5", "0.4,0.4,0.1,0.1", "a,b,c", "-0.1,0.6,0.5", "0,0,0", "nan,1,1", ""]
)
def test_bad_ratio_is_one_line_naming_the_flag(ratio):
    with pytest.raises(
        InputError,
        match=r"^--ratio=.*: expected three non-negative numbers ONSET,OFFSET,MID with a positive sum$",
    ):
        parse_ratio(ratio)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("context_len", 0.0, "--context_len=0.0: must be a positive"),
        ("edge_ms", -1.0, "--edge_ms=-1.0: must not be negative"),
    ],
)
def test_bad_sampler_settings(field, value, message):
    with pytest.raises(InputError, match=message):
        SamplerConfig(**{field: value})
