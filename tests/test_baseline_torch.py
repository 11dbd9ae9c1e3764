"""Parity of the PyTorch benchmark baseline (benchmarks/torch_ouroboros.py) with the reference.

The JAX/PyTorch speed ratio is only meaningful if the baseline computes the same function; these
checks load the reference's golden small-model parameters into the baseline and compare drives,
encoder output, rollout and losses. Skipped when torch is not installed (CI does not install it).
"""

import importlib.util
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

_PATH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "torch_ouroboros.py"


@pytest.fixture(scope="module")
def bt():
    spec = importlib.util.spec_from_file_location("torch_ouroboros", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small(bt, golden, golden_json):
    cfg = golden_json["small_model"]
    model = bt.Ouroboros(cfg["n_kernels"], cfg["n_layers"], cfg["d_state"], cfg["d_conv"], cfg["expand_factor"],
                         drive_lowpass_ms=cfg["drive_lowpass_ms"], keep_const=cfg["keep_const"],
                         tau=golden_json["tau"], dt=golden_json["dt"])
    prefix = "small/param/"
    state = {k[len(prefix):]: torch.from_numpy(v) for k, v in golden.items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    return model


def _t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def test_selective_scan_matches_recurrence_and_gradcheck(bt):
    g = torch.Generator().manual_seed(0)
    for T in (1, 7, 50):
        a = torch.rand(2, T, 3, 2, dtype=torch.float64, generator=g)
        b = torch.randn(2, T, 3, 2, dtype=torch.float64, generator=g)
        h, ref = torch.zeros(2, 3, 2, dtype=torch.float64), []
        for t in range(T):
            h = a[:, t] * h + b[:, t]
            ref.append(h)
        np.testing.assert_allclose(bt.selective_scan(a, b).numpy(), torch.stack(ref, 1).numpy(), rtol=1e-12, atol=1e-12)
        assert torch.autograd.gradcheck(bt.selective_scan, (a.requires_grad_(), b.requires_grad_()))


def test_encoder_matches_golden(small, golden):
    with torch.no_grad():
        out = small.omega_mamba(_t(golden["small/encoder/omega_mamba_in"]))
    np.testing.assert_allclose(out.numpy(), golden["small/encoder/omega_mamba_out"], rtol=1e-4, atol=1e-6)


def test_drives_match_golden(small, golden):
    with torch.no_grad():
        omega, gamma, K, W, _ = small.drives(_t(golden["small/input/x"]), _t(golden["small/input/dxdt"]))
    for name, ours in (("omega", omega), ("gamma", gamma), ("K", K), ("W", W)):
        ref = golden[f"small/drives/{name}"]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max(), err_msg=name)


def test_mrstft_matches_golden(bt, golden):
    a, b = _t(golden["loss_fixed/a"]), _t(golden["loss_fixed/b"])
    np.testing.assert_allclose(bt.stft_mag(a, 512, 128).numpy(), golden["loss_fixed/stft_mag_512_128_of_a"],
                               rtol=1e-4, atol=1e-5)
    got = float(bt.mrstft_loss(a, b, bt.DEFAULT_CONFIGS))
    np.testing.assert_allclose(got, float(golden["loss_fixed/mrstft_default"]), rtol=1e-5)


def test_rollout_and_losses_from_golden_drives(bt, golden, golden_json):
    """Rollout (noise IC injected) and the spec / tf terms, from the golden drives."""
    H = golden_json["small_loss"]["H"]
    x, dxdt, d2x = (_t(golden[f"small/input/{k}"]) for k in ("x", "dxdt", "d2x"))
    omega, gamma, K, W = (_t(golden[f"small/drives/{k}"]) for k in ("omega", "gamma", "K", "W"))
    m = torch.from_numpy(golden["small/rollout_noise_ic/mask"]).float()
    x0 = x[:, 0] * (1 - m) + _t(golden["small/rollout_noise_ic/noise_x"]) * m
    v0 = dxdt[:, 0] * (1 - m) + _t(golden["small/rollout_noise_ic/noise_v"]) * m
    with torch.no_grad():
        xhat = bt.rollout(omega, gamma, W, x0, v0, H)
    np.testing.assert_allclose(xhat.numpy(), golden["small/rollout_noise_ic/xhat"], atol=1e-5)
    spec = float(bt.mrstft_loss(xhat, x[:, :H], bt.configs_for(H)))
    np.testing.assert_allclose(spec, float(golden["small/loss/spec"]), rtol=1e-5)
    acc = -omega ** 2 * x - gamma * dxdt - K
    tf = float(((acc - d2x) ** 2).mean() / float(golden["small/loss/tf_var"]))
    np.testing.assert_allclose(tf, float(golden["small/loss/tf"]), rtol=1e-5)


def test_train_step_runs_and_updates(bt):
    torch.manual_seed(0)
    model = bt.Ouroboros(n_terms=3, n_layers=1, d_state=2, expand=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = 0.05 * torch.sin(torch.arange(128) * 0.3).repeat(2, 1)
    batch = (x, 0.3 * 0.05 * torch.cos(torch.arange(128) * 0.3).repeat(2, 1), -0.09 * x, torch.tensor([True, False]))
    before = [p.detach().clone() for p in model.parameters()]
    loss = bt.train_step(model, opt, batch, H=32, tf_var=float(batch[2].var()))
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
