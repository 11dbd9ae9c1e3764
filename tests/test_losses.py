"""Loss terms: parity with the PyTorch reference, independent NumPy computations, invariants."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from ouroboros_jax.objective.losses import (
    DEFAULT_STFT_CONFIGS,
    LossWeights,
    acceleration_anchor_loss,
    envelope_l1_loss,
    envelope_log_loss,
    gaussian_envelope,
    mrstft_loss,
    mse_accel_loss,
    stft_configs_for_horizon,
    stft_magnitude,
    teacher_acceleration_variance,
    total_loss,
)
from ouroboros_jax.training.config import ObjectiveConfig

SIGMA_2MS = 2.0 / 1000.0 * 44100.0  # 88.2 samples, the reference's env_ms = 2 at 44.1 kHz

# Compiled once per shape: eager dispatch of the many small STFT ops is what would be slow.
_mrstft = jax.jit(mrstft_loss, static_argnames="configs")
_mrstft_grads = jax.jit(jax.grad(mrstft_loss, argnums=(0, 1)))
_stft = jax.jit(stft_magnitude, static_argnums=(1, 2))


def _tone(batch, length, gain=0.5, seed=0):
    """Loud test audio: a chirped tone with a slow amplitude modulation plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    f0 = rng.uniform(0.02, 0.08, size=(batch, 1))
    am = 0.6 + 0.4 * np.sin(2 * np.pi * t / length)
    x = gain * am * np.sin(2 * np.pi * f0 * t * (1 + 0.3 * t / length))
    return (x + 0.01 * rng.standard_normal((batch, length))).astype(np.float32)


def _numpy_stft_magnitude(x, n_fft, hop):
    """Explicit-frame STFT: reflect pad n_fft//2, periodic Hann, rfft per frame, float64."""
    x = np.asarray(x, dtype=np.float64)
    padded = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)  # periodic
    starts = range(0, padded.shape[-1] - n_fft + 1, hop)
    spectra = [np.fft.rfft(padded[:, s : s + n_fft] * window, axis=-1) for s in starts]
    return np.abs(np.stack(spectra, axis=-1))


# --- parity with the reference ---------------------------------------------------------------


def test_stft_magnitude_matches_reference(golden):
    mag = _stft(jnp.asarray(golden["loss_fixed/a"]), 512, 128)
    expected = golden["loss_fixed/stft_mag_512_128_of_a"]
    chex.assert_shape(mag, expected.shape)
    np.testing.assert_allclose(mag, expected, rtol=1e-5, atol=1e-5)


def test_mrstft_matches_reference(golden):
    # The reference's golden value is mrstft(pred=a, target=b); (b, a) gives 2.51, not 2.657.
    loss = _mrstft(jnp.asarray(golden["loss_fixed/a"]), jnp.asarray(golden["loss_fixed/b"]))
    np.testing.assert_allclose(loss, golden["loss_fixed/mrstft_default"], rtol=1e-5)


def test_envelope_matches_reference(golden):
    env = gaussian_envelope(jnp.asarray(golden["loss_fixed/a"]), SIGMA_2MS)
    np.testing.assert_allclose(
        env, golden["loss_fixed/gaussian_envelope_2ms_of_a"], rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize(
    "loss_fn, key",
    [
        (envelope_l1_loss, "loss_fixed/env_loss_2ms"),
        (envelope_log_loss, "loss_fixed/env_loss_log_2ms"),
    ],
)
def test_envelope_losses_match_reference(golden, loss_fn, key):
    pred, target = jnp.asarray(golden["loss_fixed/a"]), jnp.asarray(golden["loss_fixed/b"])
    np.testing.assert_allclose(loss_fn(pred, target, SIGMA_2MS), golden[key], rtol=1e-5)


def test_configs_kept_match_reference(golden_json):
    for horizon, expected in golden_json["configs_kept"].items():
        kept = stft_configs_for_horizon(DEFAULT_STFT_CONFIGS, int(horizon))
        assert kept == tuple(tuple(c) for c in expected), horizon


def test_tf_var_matches_reference_batch(golden):
    # The reference's value for one batch is torch's unbiased variance of all its elements.
    np.testing.assert_allclose(
        teacher_acceleration_variance(golden["small/input/d2x"]),
        golden["small/loss/tf_var"],
        rtol=1e-6,
    )


# --- STFT and MRSTFT ---------------------------------------------------------------------------


@pytest.mark.parametrize("n_fft, hop", [(256, 64), (512, 128), (1024, 256), (65, 16), (64, 16)])
@pytest.mark.parametrize("length", [1100, 2048])
def test_stft_magnitude_matches_numpy(n_fft, hop, length):
    x = _tone(2, length)
    mag = _stft(jnp.asarray(x), n_fft, hop)
    expected = _numpy_stft_magnitude(x, n_fft, hop)
    chex.assert_shape(mag, (2, n_fft // 2 + 1, expected.shape[-1]))
    np.testing.assert_allclose(mag, expected, rtol=1e-4, atol=1e-4 * expected.max())


@pytest.mark.parametrize(
    "horizon, expected",
    [
        (128, ((64, 16),)),
        (256, ((256, 64),)),
        (511, ((256, 64),)),
        (512, ((256, 64), (512, 128))),
        (1023, ((256, 64), (512, 128))),
        (1024, DEFAULT_STFT_CONFIGS),
        (4096, DEFAULT_STFT_CONFIGS),
        (20, ((16, 4),)),
        (130, ((65, 16),)),
    ],
)
def test_stft_configs_for_horizon(horizon, expected):
    assert stft_configs_for_horizon(DEFAULT_STFT_CONFIGS, horizon) == expected


def test_mrstft_zero_for_identical_signals():
    x = jnp.asarray(_tone(3, 2048))
    assert float(_mrstft(x, x)) == 0.0


@pytest.mark.parametrize("horizon", [128, 600, 2048])
def test_mrstft_positive_for_different_signals(horizon):
    loss = _mrstft(jnp.asarray(_tone(3, horizon, seed=1)), jnp.asarray(_tone(3, horizon, seed=2)))
    chex.assert_tree_all_finite(loss)
    assert float(loss) > 0.1


def test_mrstft_is_mean_over_kept_configs():
    # H = 1000 keeps (256, 64) and (512, 128) and drops (1024, 256).
    pred, target = jnp.asarray(_tone(2, 1000, seed=1)), jnp.asarray(_tone(2, 1000, seed=2))
    per_config = [_mrstft(pred, target, configs=(c,)) for c in DEFAULT_STFT_CONFIGS[:2]]
    np.testing.assert_allclose(_mrstft(pred, target), np.mean(per_config), rtol=1e-6)


@pytest.mark.parametrize("zero_arg", ["pred", "target", "both"])
def test_mrstft_gradient_finite_at_silence(zero_arg):
    audio = jnp.asarray(_tone(2, 1024))
    zeros = jnp.zeros_like(audio)
    pred = zeros if zero_arg in ("pred", "both") else audio
    target = zeros if zero_arg in ("target", "both") else audio
    grads = _mrstft_grads(pred, target)
    chex.assert_tree_all_finite(grads)


def test_mrstft_gradient_of_near_silent_prediction():
    # At exactly zero the magnitude's gradient is 0 (as torch's sgn(0) = 0); just above it the
    # loss must push a quiet rollout towards a loud target.
    target = jnp.asarray(_tone(2, 1024))
    pred = jnp.asarray(1e-6 * np.random.default_rng(7).standard_normal((2, 1024)), jnp.float32)
    grad, _ = _mrstft_grads(pred, target)
    chex.assert_tree_all_finite(grad)
    assert float(jnp.abs(grad).max()) > 0.0


# --- envelope losses ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss_fn", [envelope_l1_loss, envelope_log_loss])
def test_envelope_losses_zero_for_identical_signals(loss_fn):
    x = jnp.asarray(_tone(3, 2048))
    assert float(loss_fn(x, x, SIGMA_2MS)) == 0.0


@pytest.mark.parametrize("gain", [1.0, 1.5, 4.0])
def test_envelope_l1_is_gain_minus_one(gain):
    target = jnp.asarray(_tone(3, 2048))
    loss = envelope_l1_loss(gain * target, target, SIGMA_2MS)
    np.testing.assert_allclose(loss, gain - 1, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gain", [2.0, 10.0])
def test_envelope_log_loss_is_symmetric_log_gain(gain):
    target = jnp.asarray(_tone(3, 2048))
    louder = envelope_log_loss(gain * target, target, SIGMA_2MS, eps=1e-8)
    quieter = envelope_log_loss(target / gain, target, SIGMA_2MS, eps=1e-8)
    np.testing.assert_allclose(louder, np.log(gain), rtol=1e-5)
    np.testing.assert_allclose(quieter, louder, rtol=1e-5)


def test_envelope_log_loss_eps_caps_silence_penalty():
    target = jnp.asarray(_tone(2, 2048))
    eps = 1e-4
    loss = envelope_log_loss(jnp.zeros_like(target), target, SIGMA_2MS, eps=eps)
    expected = np.mean(np.log(np.asarray(gaussian_envelope(target, SIGMA_2MS)) + eps) - np.log(eps))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.parametrize("loss_fn", [envelope_l1_loss, envelope_log_loss])
@pytest.mark.parametrize("horizon", [2, 100, 265])
def test_envelope_losses_short_horizon(loss_fn, horizon):
    # Radius round(3 * 88.2) = 265 >= H: the reference crashes here; ours caps it.
    pred, target = jnp.asarray(_tone(2, horizon, seed=1)), jnp.asarray(_tone(2, horizon, seed=2))
    env = gaussian_envelope(pred, SIGMA_2MS)
    chex.assert_shape(env, (2, horizon))
    loss, grad = jax.jit(jax.value_and_grad(loss_fn), static_argnums=2)(pred, target, SIGMA_2MS)
    chex.assert_tree_all_finite((env, loss, grad))
    assert float(loss) > 0.0


# --- acceleration anchor, tf_var, legacy MSE ---------------------------------------------------


def test_acceleration_anchor_matches_numpy():
    rng = np.random.default_rng(3)
    pred, target = rng.standard_normal((2, 2, 50)).astype(np.float32)
    expected = np.mean((pred.astype(np.float64) - target) ** 2) / 0.37
    np.testing.assert_allclose(acceleration_anchor_loss(pred, target, 0.37), expected, rtol=1e-6)


@pytest.mark.parametrize("tf_var", [0.0, 1e-9, -1.0])
def test_acceleration_anchor_floors_variance(tf_var):
    pred, target = jnp.ones((2, 4)), jnp.zeros((2, 4))
    np.testing.assert_allclose(acceleration_anchor_loss(pred, target, tf_var), 1e6, rtol=1e-6)


def test_teacher_acceleration_variance_is_pooled_variance():
    rng = np.random.default_rng(4)
    # Segments with different means: the pooled variance differs from the mean of per-row ones.
    d2x = (rng.standard_normal((6, 40)) * 0.1 + np.arange(6)[:, None]).astype(np.float32)
    value = teacher_acceleration_variance(d2x)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, np.var(d2x.astype(np.float64), ddof=1), rtol=1e-12)
    assert value > 2 * np.mean(np.var(d2x, axis=1, ddof=1))


def test_teacher_acceleration_variance_floor():
    assert teacher_acceleration_variance(np.full((3, 10), 2.5)) == 1e-6
    assert teacher_acceleration_variance(1e-5 * np.arange(20.0).reshape(2, 10)) == 1e-6


def _naive_mse_accel(pred, target, W, lam):
    batch, length = pred.shape
    total = 0.0
    for b in range(batch):
        for t in range(length):
            total += (pred[b, t] - target[b, t]) ** 2
            if lam is not None:
                for i in range(W.shape[2]):
                    for j in range(W.shape[3]):
                        total += lam ** (i + j) * W[b, t, i, j] ** 2
    return total / batch


@pytest.mark.parametrize("lam", [None, 1.068, 0.5])
def test_mse_accel_matches_naive_loop(lam):
    rng = np.random.default_rng(5)
    pred, target = rng.standard_normal((2, 3, 7))
    W = rng.standard_normal((3, 7, 4, 4))
    pred_j, target_j, W_j = (jnp.asarray(a, jnp.float32) for a in (pred, target, W))
    loss = mse_accel_loss(pred_j, target_j, W_j, lam)
    np.testing.assert_allclose(loss, _naive_mse_accel(pred, target, W, lam), rtol=1e-5)


def test_mse_accel_penalty_needs_weights():
    with pytest.raises(ValueError, match="W"):
        mse_accel_loss(jnp.zeros((1, 3)), jnp.zeros((1, 3)), lam=1.1)


# --- total -------------------------------------------------------------------------------------


def test_total_loss_is_weighted_sum():
    components = {"spec": 2.0, "tf": 3.0, "env": 5.0, "env_log": 7.0}
    weights = LossWeights(lam_spec=0.5, lam_tf=1.0, lam_env=0.1, lam_env_log=2.0)
    total = jax.jit(total_loss)({k: jnp.float32(v) for k, v in components.items()}, weights)
    np.testing.assert_allclose(total, 0.5 * 2 + 3 + 0.1 * 5 + 2 * 7, rtol=1e-6)


def test_loss_weights_defaults_are_reference():
    assert ObjectiveConfig().weights == (1.0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "loss_fn, extra",
    [(mrstft_loss, ()), (envelope_l1_loss, (SIGMA_2MS,)), (acceleration_anchor_loss, (1.0,))],
)
def test_losses_reject_broadcasting_shapes(loss_fn, extra):
    # A (1, H) target would silently broadcast against a (B, H) rollout.
    with pytest.raises(AssertionError):
        loss_fn(jnp.zeros((3, 512)), jnp.zeros((1, 512)), *extra)
