"""The listening metrics (lead-in level, onset delay) and the score's summary, on signals with known answers."""

import numpy as np
import pytest

from ouroboros_jax.scoring.evaluation import autonomy_score, autonomy_summary, segment_score
from ouroboros_jax.scoring.listening import (
    ENVELOPE_MS,
    ONSET_FRACTION,
    envelope,
    lead_in_level_db,
    onset_delay_ms,
    onset_sample,
)

SR = 32000
WIDTH = int(ENVELOPE_MS / 1000 * SR)  # 160 samples


def square(n, amplitude=1.0):
    """A +-amplitude alternation: its power is amplitude^2 at every sample."""
    return amplitude * (-1.0) ** np.arange(n)


def test_lead_in_level_is_the_power_ratio_in_db():
    signal = np.concatenate([square(1000, 0.01), square(3000, 1.0)])
    np.testing.assert_allclose(lead_in_level_db(signal, 1000), -40.0, atol=1e-9)
    np.testing.assert_allclose(lead_in_level_db(signal[::-1], 3000), 40.0, atol=1e-9)
    assert lead_in_level_db(np.concatenate([np.zeros(500), square(500)]), 500) < -250  # silence: finite
    assert np.isnan(lead_in_level_db(signal, 0))


def test_envelope_is_the_rms_over_a_centred_window():
    signal = np.random.default_rng(0).normal(size=700)
    expected = [np.sqrt(np.mean(signal[max(0, t - WIDTH // 2) : t + WIDTH - WIDTH // 2] ** 2)) for t in range(700)]
    np.testing.assert_allclose(envelope(signal, WIDTH), expected, rtol=1e-12)


@pytest.mark.parametrize("lead_in", [1000, 2000])
def test_onset_of_a_step_in_level(lead_in):
    # The window of sample t covers [t - 80, t + 80): it holds k = t + 80 - lead_in samples of the
    # syllable, so the envelope is sqrt(k / 160) of the level, and reaches 0.5 of it at k = 40.
    signal = np.concatenate([np.zeros(lead_in), square(3000)])
    k = int(np.ceil(ONSET_FRACTION**2 * WIDTH))
    assert onset_sample(signal, lead_in, SR) == lead_in - WIDTH // 2 + k
    assert onset_sample(np.zeros(4000), lead_in, SR) is None


def test_onset_delay_in_ms():
    lead_in = 2000
    target = np.concatenate([np.zeros(lead_in), square(3000)])
    late = np.concatenate([np.zeros(lead_in + 320), square(2680, 0.3)])  # 10 ms later, quieter
    # Its level over the syllable is 0.3 sqrt(2680 / 3000), so it needs k >= 40 * 2680 / 3000, 36 samples.
    delay = 320 - 40 + 36
    np.testing.assert_allclose(onset_delay_ms(target, late, lead_in, SR), delay / SR * 1000)
    np.testing.assert_allclose(onset_delay_ms(late, target, lead_in, SR), -delay / SR * 1000)
    humming = square(5000, 0.5)  # sounds from the first sample: its onset is sample 0
    np.testing.assert_allclose(onset_delay_ms(target, humming, lead_in, SR),
                               -(onset_sample(target, lead_in, SR)) / SR * 1000)
    assert np.isnan(onset_delay_ms(target, np.zeros(5000), lead_in, SR))


def harmonic_syllable(lead_in, n, level=1.0, lead_level=0.0):
    t = np.arange(n) / SR
    tone = np.sin(2 * np.pi * 1700 * t) + 0.5 * np.sin(2 * np.pi * 3400 * t)
    return tone * np.where(np.arange(n) < lead_in, lead_level, level)


def test_segment_score_carries_the_listening_metrics():
    target = harmonic_syllable(2000, 6000)
    same = segment_score(target, target, SR, lead_in=2000)
    assert same.onset_delay_ms == 0.0 and same.lead_in_db < -50  # the detrended silence stays far below
    humming = segment_score(target, harmonic_syllable(2000, 6000, lead_level=0.1), SR, lead_in=2000)
    np.testing.assert_allclose(humming.lead_in_db, -20.0, atol=0.5)
    no_lead_in = segment_score(target, target, SR)
    assert np.isnan(no_lead_in.lead_in_db) and np.isnan(no_lead_in.onset_delay_ms)
    assert no_lead_in.score == same.score  # the score itself does not depend on them
    diverged = segment_score(target, np.full(6000, np.nan), SR, lead_in=2000)
    assert np.isnan(diverged.lead_in_db) and np.isnan(diverged.onset_delay_ms)


def test_breakdown_means_the_listening_metrics_per_vocalisation():
    targets = [harmonic_syllable(2000, 6000), harmonic_syllable(1000, 5000)]
    outputs = [harmonic_syllable(2000, 6000, lead_level=0.1), harmonic_syllable(1000, 5000, lead_level=0.01)]
    result = autonomy_score(targets, outputs, SR, lead_ins=[2000, 1000])
    per_segment = [segment_score(t, y, SR, lead_in=n) for t, y, n in zip(targets, outputs, [2000, 1000])]
    assert result.segments == tuple(per_segment)
    np.testing.assert_allclose(result.breakdown["lead_in_db"], np.mean([s.lead_in_db for s in per_segment]))
    np.testing.assert_allclose(result.breakdown["onset_delay_ms"], np.mean([s.onset_delay_ms for s in per_segment]))


def summary_of(scores):
    segments = tuple(segment_score(np.ones(300), np.ones(300), SR)._replace(score=s, lead_in_db=-s, onset_delay_ms=s)
                     for s in scores)
    return autonomy_summary(type(autonomy_score([np.ones(300)], [np.ones(300)], SR))(
        float(np.mean(scores)), segments, {}))


def test_summary_of_the_segment_scores():
    summary = summary_of([-1.0, 0.5, 0.2, -0.1, 0.3])
    assert summary["n_vocalisations"] == 5 and summary["median"] == 0.2 and summary["frac_positive"] == 0.6
    np.testing.assert_allclose(summary["mean"], -0.02)
    assert summary["median_lead_in_db"] == -0.2 and summary["median_onset_delay_ms"] == 0.2
    np.testing.assert_allclose(summary_of([0.4] * 6)["mean_ci90"], [0.4, 0.4], rtol=1e-12)


def test_bootstrap_interval_of_the_mean_matches_the_normal_approximation():
    scores = np.random.default_rng(1).normal(0.3, 1.0, 400)
    low, high = summary_of(scores)["mean_ci90"]
    half = 1.645 * scores.std() / np.sqrt(len(scores))
    np.testing.assert_allclose([low, high], [scores.mean() - half, scores.mean() + half], atol=0.15 * half)
