"""Evaluation: detrend, autonomy score (golden parity, floor), seed ranking, autonomous outputs (docs/method.md)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from flax import nnx

from ouroboros_jax.model.ouroboros import ModelConfig, Ouroboros
from ouroboros_jax.objective.derivatives import first_derivative
from ouroboros_jax.ode.dynamics import RolloutConfig, rollout
from ouroboros_jax.scoring.evaluation import (
    Autonomy,
    SegmentScore,
    autonomous_outputs,
    autonomous_outputs_jit,
    autonomy_score,
    correct,
    generate,
    rank_seeds,
    ranking,
    segment_score,
)
from tests.helpers import compute_drives

SR = 44100.0
SCORE_CASES = ("identical", "half_amp", "pitch_up", "noise", "diverged")
COMPONENTS = ("spec_corr", "amp_pen", "pitch_pen")

# tau = 2 dt: the initial velocity must be scaled by time_scale = 2, and the step is h = 0.5.
TINY = ModelConfig(n_kernels=3, n_layers=1, d_state=2, d_conv=4, expand_factor=2, tau=2.0 / SR)
BOUNDED = RolloutConfig(step_size=0.5)
UNBOUNDED = RolloutConfig(step_size=0.5, bound_x=None, bound_v=None, clamp_stages=False)


def tone(freq_hz, n=4096, amplitude=0.1, phase=0.0):
    return amplitude * np.sin(2 * np.pi * freq_hz * np.arange(n) / SR + phase)


def song_like(n=4096, seed=0):
    """A harmonic stack at 2 kHz plus a little noise: a bounded, pitched target."""
    noise = 1e-3 * np.random.default_rng(seed).standard_normal(n)
    return tone(2000.0, n) + tone(4000.0, n, 0.03, 1.0) + noise


@pytest.fixture(scope="module")
def tiny_model():
    return Ouroboros(TINY, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def vocalisations():
    """(2, 400) float32 audio and its per-sample derivative."""
    x = (0.1 * np.random.default_rng(1).standard_normal((2, 400))).astype(np.float32)
    return x, first_derivative(x).astype(np.float32)


# --- correct ---------------------------------------------------------------------------------


def test_correct_matches_golden(golden):
    expected = golden["score/correct_of_target"]
    # float32 round-off of the stored values; other padding choices are off by 1e-4.
    np.testing.assert_allclose(correct(golden["score/target"]), expected, rtol=0,
                               atol=2 * np.spacing(np.abs(expected).max()))


def test_correct_removes_slow_trend_and_keeps_fast_tone():
    n = 2000  # corner at 100 cycles per window
    t = np.arange(n) / n
    fast = 0.1 * np.sin(2 * np.pi * 500 * t + 0.3)
    slow = 0.5 + 0.3 * t + 0.2 * np.sin(2 * np.pi * 3 * t)
    interior = slice(n // 20, -n // 20)  # away from the filter's edge transients
    np.testing.assert_allclose(correct(slow + fast)[interior], fast[interior], atol=1e-5)
    np.testing.assert_allclose(correct(slow)[interior], 0.0, atol=1e-6)


def test_correct_filters_along_last_axis():
    batch = np.random.default_rng(0).standard_normal((2, 3, 500))
    np.testing.assert_allclose(correct(batch)[1, 2], correct(batch[1, 2]), rtol=1e-12, atol=1e-14)


def test_correct_needs_more_than_200_samples():
    with pytest.raises(ValueError, match="200"):
        correct(np.ones(200))
    assert correct(np.ones(201)).shape == (201,)


# --- scores ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("case", SCORE_CASES)
def test_golden_score_cases(golden, golden_json, case, rescale):
    expected = golden_json["score_cases"][f"{case}/rescale={rescale}"]
    target, output = golden["score/target"], golden["score/output/" + case]
    result = autonomy_score([target], [output], SR, rescale=rescale)
    mean, scores, breakdown = result.score, result.segment_scores, result.breakdown
    np.testing.assert_allclose(mean, expected["score"], rtol=0, atol=1e-7)
    np.testing.assert_allclose(scores, [expected["score"]], rtol=0, atol=1e-7)
    for name in COMPONENTS:
        want = np.nan if expected[name] is None else expected[name]
        np.testing.assert_allclose(breakdown[name], want, rtol=0, atol=1e-7, err_msg=name)
    assert breakdown["bounded_frac"] == expected["bounded_frac"]
    assert breakdown["rescale"] == expected["rescale"] and breakdown["cold_start"] == expected["cold_start"]
    single = segment_score(target, output, SR, rescale=rescale)
    assert single.score == scores[0] and single.bounded == (expected["bounded_frac"] == 1.0)


def test_output_equal_to_target_scores_one():
    target = song_like()
    result = segment_score(target, target, SR)
    assert (result.spec_corr, result.amp_pen, result.pitch_pen) == pytest.approx((1.0, 0.0, 0.0), abs=1e-12)
    assert result.score == pytest.approx(1.0, abs=1e-12) and result.bounded


@pytest.mark.parametrize("kind", ["inf", "nan", "constant", "zeros"])
def test_diverged_output_scores_sentinel(kind):
    target = song_like()
    output = {"inf": np.where(np.arange(target.size) > 2000, np.inf, target),
              "nan": np.full_like(target, np.nan),
              "constant": np.full_like(target, 0.3),
              "zeros": np.zeros_like(target)}[kind]
    result = segment_score(target, output, SR, diverge_score=-5.0)
    assert result.score == -5.0 and not result.bounded
    assert np.isnan([result.spec_corr, result.amp_pen, result.pitch_pen]).all()


def test_rescale_removes_only_the_amplitude_penalty():
    target = song_like()
    output = 3.0 * tone(3000.0) + 1e-3 * np.random.default_rng(7).standard_normal(target.size)
    raw = segment_score(target, output, SR, rescale=False)
    rescaled = segment_score(target, output, SR, rescale=True)
    assert raw.amp_pen > 0.5 and rescaled.amp_pen < 1e-9
    assert rescaled.pitch_pen == raw.pitch_pen == pytest.approx(np.log(3000.0 / 2000.0), abs=0.05)
    # Scale-free up to the 1e-20 log floor, which matters in the lowest bins that `correct` empties.
    assert rescaled.spec_corr == pytest.approx(raw.spec_corr, abs=1e-5)


def test_weights_and_components_compose_the_score():
    target, output = song_like(), 0.5 * tone(2600.0)
    r = segment_score(target, output, SR, w_amp=0.3, w_pitch=2.0)
    assert r.score == pytest.approx(r.spec_corr - 0.3 * r.amp_pen - 2.0 * r.pitch_pen, abs=1e-12)


def test_spec_corr_is_limited_to_fmax():
    # The output differs from the target only above 12 kHz, so the correlation up to 8 kHz is 1.
    target = song_like()
    hiss = scipy.signal.sosfiltfilt(scipy.signal.butter(8, 12000.0, "highpass", fs=SR, output="sos"),
                                    np.random.default_rng(3).standard_normal(target.size))
    output = target + 0.05 * hiss
    assert segment_score(target, output, SR, fmax=8000.0).spec_corr == pytest.approx(1.0, abs=1e-4)
    assert segment_score(target, output, SR, fmax=SR / 2).spec_corr < 0.9


def test_bounded_score_is_floored_at_the_sentinel_and_outranks_a_diverged_seed():
    target = song_like()
    faint_off_pitch = tone(300.0, amplitude=1e-6) + tone(19000.0, amplitude=1e-6)
    r = segment_score(target, faint_off_pitch, SR)
    assert r.spec_corr - r.amp_pen - r.pitch_pen < -5.0  # unfloored, it would lose to divergence
    assert r.score == -5.0 and r.bounded
    bounded_seed = autonomy_score([target], [faint_off_pitch], SR)
    diverged_seed = autonomy_score([target], [np.full_like(target, np.nan)], SR)
    assert bounded_seed[0] == diverged_seed[0] == -5.0
    autonomy = [diverged_seed[0], bounded_seed[0]]
    bounded_frac = [diverged_seed[2]["bounded_frac"], bounded_seed[2]["bounded_frac"]]
    np.testing.assert_array_equal(rank_seeds(autonomy, bounded_frac), [1, 0])


def test_autonomy_score_means_over_segments_and_bounded_ones():
    targets = [song_like(seed=0), song_like(seed=1)]
    outputs = [0.5 * targets[0], np.full(4096, np.inf)]
    result = autonomy_score(targets, outputs, SR, rescale=False, cold_start=False)
    mean, scores, breakdown = result.score, result.segment_scores, result.breakdown
    first = segment_score(targets[0], outputs[0], SR)
    np.testing.assert_allclose(scores, [first.score, -5.0], rtol=1e-12)
    assert mean == pytest.approx((first.score - 5.0) / 2, abs=1e-12)
    for name in COMPONENTS:  # the diverged segment has no components
        assert breakdown[name] == pytest.approx(getattr(first, name), abs=1e-12)
    assert breakdown["bounded_frac"] == 0.5 and breakdown["cold_start"] is False


def test_all_diverged_breakdown_is_nan_without_warnings():
    targets = np.stack([song_like(seed=0), song_like(seed=1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = autonomy_score(targets, np.full_like(targets, np.nan), SR)
        mean, breakdown = result.score, result.breakdown
    assert mean == -5.0 and breakdown["bounded_frac"] == 0.0
    assert all(np.isnan(breakdown[name]) for name in COMPONENTS)


def test_segment_score_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        segment_score(np.zeros(500), np.zeros(400), SR)


# --- rank_seeds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "autonomy,bounded_frac,diverged,expected",
    [
        ([0.1, 0.5, -1.0], [1.0, 1.0, 1.0], None, [1, 0, 2]),  # higher autonomy first
        ([np.nan, -4.0, 0.2], [1.0, 1.0, 1.0], None, [2, 1, 0]),  # NaN last (the reference would select it)
        ([-5.0, -5.0, -5.0], [0.0, 1.0, 0.5], None, [1, 2, 0]),  # ties: higher bounded_frac first
        ([0.3, 0.3], [1.0, 1.0], None, [0, 1]),  # full ties keep seed order
        ([0.9, np.nan, 0.1], [1.0, 1.0, 1.0], [True, False, False], [2, 1, 0]),  # diverged after NaN
        ([-np.inf, -2.0], [0.0, 1.0], None, [1, 0]),
    ],
)
def test_rank_seeds(autonomy, bounded_frac, diverged, expected):
    np.testing.assert_array_equal(rank_seeds(autonomy, bounded_frac, diverged), expected)


# --- device side ------------------------------------------------------------------------------


def test_autonomous_outputs_is_the_training_rollout_from_the_data_ic(tiny_model, vocalisations):
    x, dxdt = vocalisations
    out = np.asarray(autonomous_outputs_jit(tiny_model, x, dxdt, BOUNDED))
    drives = compute_drives(tiny_model, jnp.asarray(x), jnp.asarray(dxdt))
    by_hand = jax.jit(rollout, static_argnums=(3, 4))
    expected = by_hand(drives, jnp.asarray(x[:, 0]), jnp.asarray(2.0 * dxdt[:, 0]), x.shape[1], BOUNDED)
    assert out.shape == x.shape and np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 0], x[:, 0])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # The test can tell a wrong initial velocity (time_scale ignored) apart.
    wrong_ic = by_hand(drives, jnp.asarray(x[:, 0]), jnp.asarray(dxdt[:, 0]), x.shape[1], BOUNDED)
    assert np.abs(out - np.asarray(wrong_ic)).max() > 1e-3


def test_autonomous_outputs_vmaps_over_stacked_seeds(vocalisations):
    x, dxdt = vocalisations
    models = [Ouroboros(TINY, rngs=nnx.Rngs(seed)) for seed in (3, 4)]
    graphdef, _ = nnx.split(models[0])
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(nnx.state(m) for m in models))
    per_seed = jax.jit(jax.vmap(lambda state: autonomous_outputs(nnx.merge(graphdef, state), x, dxdt, BOUNDED)))
    out = per_seed(stacked)
    for seed, model in enumerate(models):
        np.testing.assert_allclose(out[seed], autonomous_outputs_jit(model, x, dxdt, BOUNDED), rtol=1e-5, atol=1e-6)


def test_generate_detrends_and_rescales(tiny_model, vocalisations):
    x, dxdt = vocalisations
    detrended = correct(np.asarray(autonomous_outputs_jit(tiny_model, x, dxdt, BOUNDED), np.float64))
    to_ref = generate(tiny_model, x, BOUNDED, rescale=True, ref_rms=0.05)
    # Exact up to the reference's 1e-12 guard on the output's standard deviation (~1e-5 here).
    np.testing.assert_allclose(to_ref.std(axis=-1), 0.05, rtol=1e-6)
    np.testing.assert_allclose(to_ref, detrended * (0.05 / (detrended.std(axis=-1, keepdims=True) + 1e-12)),
                               rtol=1e-5, atol=1e-9)
    to_audio = generate(tiny_model, x, BOUNDED)
    np.testing.assert_allclose(to_audio.std(axis=-1), correct(x).std(axis=-1), rtol=1e-6)
    np.testing.assert_allclose(generate(tiny_model, x, BOUNDED, rescale=False), detrended, rtol=1e-5, atol=1e-9)
    assert generate(tiny_model, x[0], BOUNDED, ref_rms=0.05).shape == x[0].shape


def test_generate_returns_a_divergent_output_unscaled(vocalisations):
    x, dxdt = vocalisations
    model = Ouroboros(TINY, rngs=nnx.Rngs(0))
    # Strong negative damping without the soft-tanh bounds: the state overflows within the window.
    model.gamma_head.kernel[...] = jnp.zeros_like(model.gamma_head.kernel[...])
    model.gamma_head.bias[...] = jnp.full_like(model.gamma_head.bias[...], -5.0)
    raw = np.asarray(autonomous_outputs_jit(model, x, dxdt, UNBOUNDED), np.float64)
    assert not np.isfinite(raw).all(axis=-1).any()
    np.testing.assert_array_equal(generate(model, x, UNBOUNDED, ref_rms=0.05), raw)


def test_ranking_by_the_median_of_the_segment_scores():
    def autonomy(scores):
        segments = tuple(SegmentScore(s, True, 0.0, 0.0, 0.0) for s in scores)
        return Autonomy(float(np.mean(scores)), segments, {"bounded_frac": 1.0})

    skewed, steady = autonomy([1.0, -3.0, 0.9]), autonomy([0.1, 0.2, 0.0])  # means -0.37 and 0.1, medians 0.9 and 0.1
    np.testing.assert_array_equal(ranking([skewed, steady]), [1, 0])
    np.testing.assert_array_equal(ranking([skewed, steady], statistic="mean"), [1, 0])
    np.testing.assert_array_equal(ranking([skewed, steady], statistic="median"), [0, 1])
    np.testing.assert_array_equal(ranking([skewed, steady], np.array([True, False]), statistic="median"), [1, 0])
