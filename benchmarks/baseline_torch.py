"""PyTorch eager baseline: one full spectral-rollout training step of the polynomial Ouroboros.

Written for this benchmark from the method's description (docs/method.md), so that the
JAX/PyTorch speed ratio can be measured in one run on one machine. It follows the reference's
execution model ("eager" rollout backend): the RK4 rollout is a Python ``for`` loop over the
horizon, one autograd node per operation; everything else is ordinary eager PyTorch.

One training step (``train_step``) is:

1. drives once from the full segment: three Mamba stacks on ``[reverse(z); z]`` (last L outputs
   kept), heads ``omega = |linear|``, ``gamma = linear``, ``W = linear 2 -> P*P`` with the
   structural zeros (``W[1,0] = W[0,1] = 0``, ``W[0,0] = 0`` unless ``keep_const``), zero-phase
   Gaussian low-pass (1 ms, reflect padding) of omega, gamma and all P*P channels of W, and K
   recomputed from the filtered W on the data state;
2. variance-normalised teacher-forced acceleration anchor over the whole segment;
3. RK4 rollout, h = 1 sample, drive of sample k held over step k, soft-tanh (0.5 / 1.0) after
   every step, H-1 steps, noise initial condition (rms 1e-3) on ONSET examples;
4. multi-resolution STFT loss (periodic Hann, centred reflect-padded frames, one-sided
   magnitudes; spectral convergence + log-magnitude L1; configs with n_fft <= H);
5. total = spec + tf; backward; ``clip_grad_norm_(5.0)``; Adam(1e-3).

Selective scan. The reference (mambapy) runs the Mamba recurrence ``h_t = a_t * h_{t-1} + b_t``
with a Blelloch parallel scan and a hand-written backward. A sequential Python loop over the
2L = 4410 encoder steps would make this baseline absurdly slow, so the scan here is a vectorised
*two-level chunked scan* wrapped in a custom ``autograd.Function``: the 2L steps are cut into
about sqrt(2L) chunks of about sqrt(2L) steps; (i) a loop over the position inside the chunk
scans all chunks at once (each operation covers every batch element, chunk, channel and state),
(ii) a short loop over chunks carries the chunk-final states, (iii) one broadcast multiply-add
adds each chunk's incoming state. That is O(T) work in about 2*sqrt(T) tensor operations, exact
(no log-space division, so no overflow for strongly decaying states), and numerically the
sequential recurrence. The backward is the same scan run in reverse time on the output gradient
(``g_b_t = g_h_t + a_{t+1} g_b_{t+1}``, ``g_a_t = g_b_t h_{t-1}``), so no per-step intermediates
are stored.

Parameter names follow the reference's ``state_dict`` (see ``tests/golden/README.md``), so golden
parameters load with ``load_state_dict``; ``tests/test_baseline_torch.py`` checks the drives and
the MRSTFT against the reference's golden values.

Fairness notes (CPU): denormals are flushed to zero (``torch.set_flush_denormal``), as XLA does
on CPU; without it the cold-start rollout (noise IC ~1e-3 raised to powers up to 15) computes on
denormals and a step is 10-40x slower (``--keep_denormals`` measures that). The Gaussian
low-pass runs all channels as one depthwise ``conv1d`` (identical result; the batch-of-1-channel
layout has a pathologically slow CPU backward). Every timed call starts from the same parameters
and a fresh Adam state, like the JAX ``train_step.py`` benchmark, on the same synthetic batch
(``synthetic.harmonic_batch``).

Usage::

    python benchmarks/baseline_torch.py [--horizons 512,1024,2048] [--batch 8] [--length 2205]
        [--repeats 3] [--threads N] [--keep_denormals] [--quick]

prints one JSON object per horizon (``benchmarks/timing.py`` format). torch is a benchmark-only
dependency (CPU wheel is enough).
"""

from __future__ import annotations

import math
import pathlib
import platform
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from absl import flags

from ouroboros_jax import cli
from ouroboros_jax.errors import report_input_errors

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import shared_flags  # noqa: E402  (benchmarks/shared_flags.py)
import timing  # noqa: E402  (benchmarks/timing.py)

SR = 44100
BX, BXP = 0.5, 1.0  # soft-tanh bounds on x and x' after every rollout step
DEFAULT_CONFIGS = ((256, 64), (512, 128), (1024, 256))


# --------------------------------------------------------------------------------------------
# Selective scan: h_t = a_t * h_{t-1} + b_t along dim 1, h_{-1} = 0.


def _chunked_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inclusive linear-recurrence scan along dim 1 (no autograd); see the module docstring."""
    bsz, t_len = a.shape[:2]
    rest = a.shape[2:]
    chunk = max(1, math.ceil(math.sqrt(t_len)))
    n_chunks = math.ceil(t_len / chunk)
    pad = n_chunks * chunk - t_len
    if pad:  # padding at the end never influences earlier states
        a = torch.cat([a, a.new_ones((bsz, pad, *rest))], 1)
        b = torch.cat([b, b.new_zeros((bsz, pad, *rest))], 1)
    a = a.reshape(bsz, n_chunks, chunk, *rest)
    h = b.reshape(bsz, n_chunks, chunk, *rest).clone()
    acum = a.clone()
    for i in range(1, chunk):  # scan inside every chunk at once, zero incoming state
        h[:, :, i].addcmul_(a[:, :, i], h[:, :, i - 1])
        acum[:, :, i].mul_(acum[:, :, i - 1])
    carry = h.new_zeros((bsz, *rest))
    incoming = [carry]
    for j in range(n_chunks - 1):  # state entering chunk j + 1
        carry = h[:, j, -1] + acum[:, j, -1] * carry
        incoming.append(carry)
    h.addcmul_(acum, torch.stack(incoming, 1).unsqueeze(2))
    return h.reshape(bsz, n_chunks * chunk, *rest)[:, :t_len]


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b):
        h = _chunked_scan(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, gh):
        a, h = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], 1)
        gb = _chunked_scan(a_next.flip(1), gh.flip(1)).flip(1)
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
        return gb * h_prev, gb


def selective_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _SelectiveScan.apply(a, b)


# --------------------------------------------------------------------------------------------
# Model


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MambaMixer(nn.Module):
    def __init__(self, d_model: int, d_state: int, d_conv: int, expand: int):
        super().__init__()
        self.d_inner = d_inner = expand * d_model
        self.dt_rank = dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, d_inner, bias=True)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        with torch.no_grad():
            self.dt_proj.weight.uniform_(-dt_rank ** -0.5, dt_rank ** -0.5)
            dt0 = torch.exp(torch.rand(d_inner) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)).clamp(min=1e-4)
            self.dt_proj.bias.copy_(dt0 + torch.log(-torch.expm1(-dt0)))  # softplus^-1(dt0)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d_inner, 1))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, u):  # (B, T, d_model)
        t_len = u.shape[1]
        xb, zb = self.in_proj(u).chunk(2, dim=-1)
        xb = F.silu(self.conv1d(xb.transpose(1, 2))[:, :, :t_len].transpose(1, 2))
        d_raw, b_t, c_t = self.x_proj(xb).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(d_raw))  # (B, T, d_inner)
        a_mat = -torch.exp(self.A_log)  # (d_inner, N)
        a_bar = torch.exp(delta.unsqueeze(-1) * a_mat)  # (B, T, d_inner, N)
        bx = (delta * xb).unsqueeze(-1) * b_t.unsqueeze(2)  # (B, T, d_inner, N)
        h = selective_scan(a_bar, bx)
        y = (h @ c_t.unsqueeze(-1)).squeeze(-1) + self.D * xb
        return self.out_proj(y * F.silu(zb))


class ResidualBlock(nn.Module):
    def __init__(self, d_model, d_state, d_conv, expand):
        super().__init__()
        self.mixer = MambaMixer(d_model, d_state, d_conv, expand)
        self.norm = RMSNorm(d_model)

    def forward(self, x):
        return self.mixer(self.norm(x)) + x


class MambaStack(nn.Module):
    def __init__(self, n_layers, d_model=2, d_state=4, d_conv=4, expand=10):
        super().__init__()
        self.layers = nn.ModuleList(ResidualBlock(d_model, d_state, d_conv, expand) for _ in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class PolyKernel(nn.Module):
    def __init__(self, n_terms: int, z_dim: int = 2):
        super().__init__()
        self.P = n_terms + 1
        self.weights = nn.Linear(z_dim, self.P * self.P)


def gaussian_lowpass(y: torch.Tensor, sigma: float, cap_len: bool = True) -> torch.Tensor:
    """Zero-phase Gaussian low-pass along the last axis, reflect padding, same-length output."""
    n = y.shape[-1]
    r = max(1, round(3 * sigma))
    if cap_len:
        r = min(r, n - 1)
    taps = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=y.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    lead = y.shape[:-1]
    # All channels as the channels of one depthwise conv: same result as a (channels, 1, n)
    # batch through a 1-channel conv, but its CPU backward is ~30x faster.
    z = F.pad(y.reshape(1, -1, n), (r, r), mode="reflect")
    m = z.shape[1]
    return F.conv1d(z, taps.view(1, 1, -1).expand(m, 1, -1), groups=m).reshape(*lead, n)


def poly_powers(x: torch.Tensor, P: int) -> torch.Tensor:
    return torch.pow(x.unsqueeze(-1), torch.arange(P, dtype=x.dtype))


class Ouroboros(nn.Module):
    """Polynomial Ouroboros (drives only; the ODE is integrated by `rollout`)."""

    def __init__(self, n_terms=15, n_layers=3, d_state=4, d_conv=4, expand=10, drive_lowpass_ms=1.0,
                 keep_const=True, tau=1.0 / SR, dt=1.0 / SR):
        super().__init__()
        self.P = n_terms + 1
        self.tau, self.dt = tau, dt
        self.drive_lowpass_ms, self.keep_const = drive_lowpass_ms, keep_const
        self.omega_mamba = MambaStack(n_layers, 2, d_state, d_conv, expand)
        self.gamma_mamba = MambaStack(n_layers, 2, d_state, d_conv, expand)
        self.kernel_mamba = MambaStack(n_layers, 2, d_state, d_conv, expand)
        self.omega_net = nn.Linear(2, 1)
        self.gamma_net = nn.Linear(2, 1)
        self.kernel = PolyKernel(n_terms, 2)
        if keep_const:
            with torch.no_grad():
                self.kernel.weights.weight[0].zero_()
                self.kernel.weights.bias[0].zero_()
        mask = torch.ones(self.P, self.P)
        mask[1, 0] = mask[0, 1] = 0.0
        if not keep_const:
            mask[0, 0] = 0.0
        self.register_buffer("w_mask", mask, persistent=False)

    def drives(self, x: torch.Tensor, dxdt: torch.Tensor):
        """x, dxdt: (B, L). Returns omega, gamma, K (B, L), W (B, L, P, P) and z2 (B, L)."""
        bsz, n = x.shape
        z2 = dxdt * (self.tau / self.dt)
        z = torch.stack([x, z2], -1)
        u = torch.cat([z.flip(1), z], 1)
        e_om = self.omega_mamba(u)[:, n:]
        e_ga = self.gamma_mamba(u)[:, n:]
        e_ke = self.kernel_mamba(u)[:, n:]
        omega = self.omega_net(e_om).squeeze(-1).abs()
        gamma = self.gamma_net(e_ga).squeeze(-1)
        W = self.kernel.weights(e_ke).view(bsz, n, self.P, self.P) * self.w_mask
        if self.drive_lowpass_ms > 0:
            sigma = self.drive_lowpass_ms / 1000.0 / self.dt
            omega = gaussian_lowpass(omega, sigma)
            gamma = gaussian_lowpass(gamma, sigma)
            Wf = gaussian_lowpass(W.reshape(bsz, n, -1).transpose(1, 2), sigma)
            W = Wf.transpose(1, 2).reshape(bsz, n, self.P, self.P) * self.w_mask
        K = kernel_value(W, x, z2)
        return omega, gamma, K, W, z2


def kernel_value(W, x, v):
    """sum_ij W[..., i, j] x^i v^j for W (..., P, P), x and v (...)."""
    P = W.shape[-1]
    return (poly_powers(x, P).unsqueeze(-2) @ W @ poly_powers(v, P).unsqueeze(-1)).squeeze(-1).squeeze(-1)


# --------------------------------------------------------------------------------------------
# Rollout and losses


def rollout(omega, gamma, W, x0, v0, H: int) -> torch.Tensor:
    """Eager RK4 rollout, h = 1, drives of sample k held over step k, soft-tanh after each step."""
    P = W.shape[-1]
    pw = torch.arange(P, dtype=x0.dtype)
    om2 = omega[:, :H] ** 2
    ga = gamma[:, :H]
    x, v = x0, v0
    out = [x]
    for k in range(H - 1):
        o2, g, Wk = om2[:, k], ga[:, k], W[:, k]

        def f(xs, vs):
            K = (torch.pow(xs.unsqueeze(-1), pw).unsqueeze(1) @ Wk @ torch.pow(vs.unsqueeze(-1), pw).unsqueeze(-1))
            return vs, -o2 * xs - g * vs - K.view(-1)

        k1x, k1v = f(x, v)
        k2x, k2v = f(x + 0.5 * k1x, v + 0.5 * k1v)
        k3x, k3v = f(x + 0.5 * k2x, v + 0.5 * k2v)
        k4x, k4v = f(x + k3x, v + k3v)
        x = x + (k1x + 2 * k2x + 2 * k3x + k4x) / 6
        v = v + (k1v + 2 * k2v + 2 * k3v + k4v) / 6
        x = BX * torch.tanh(x / BX)
        v = BXP * torch.tanh(v / BXP)
        out.append(x)
    return torch.stack(out, 1)


def configs_for(H: int, configs=DEFAULT_CONFIGS):
    kept = [(n, h) for n, h in configs if n <= H]
    if not kept:
        n = max(16, H // 2)
        kept = [(n, max(1, n // 4))]
    return kept


def stft_mag(y: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    win = torch.hann_window(n_fft, periodic=True, dtype=y.dtype)
    return torch.stft(y, n_fft, hop_length=hop, win_length=n_fft, window=win, center=True, pad_mode="reflect",
                      normalized=False, onesided=True, return_complex=True).abs()


def mrstft_loss(pred: torch.Tensor, target: torch.Tensor, configs) -> torch.Tensor:
    """DDSP-style MRSTFT: mean over configs of mean_b (spectral convergence + log-magnitude L1)."""
    total = 0.0
    for n_fft, hop in configs:
        A, G = stft_mag(pred, n_fft, hop), stft_mag(target, n_fft, hop)
        sc = torch.linalg.vector_norm(G - A, dim=(-2, -1)) / (torch.linalg.vector_norm(G, dim=(-2, -1)) + 1e-8)
        lm = (torch.log(G + 1e-5) - torch.log(A + 1e-5)).abs().mean(dim=(-2, -1))
        total = total + (sc + lm).mean()
    return total / len(configs)


def spectral_rollout_loss(model: Ouroboros, x, dxdt, d2x, H, tf_var, ic_mask, ic_noise_rms=1e-3,
                          configs=DEFAULT_CONFIGS, lam_spec=1.0, lam_tf=1.0):
    omega, gamma, K, W, z2 = model.drives(x, dxdt)
    acc = -omega ** 2 * x - gamma * z2 - K
    l_tf = ((acc - d2x) ** 2).mean() / max(float(tf_var), 1e-6)
    m = ic_mask.to(x.dtype)
    x0 = (x[:, 0] * (1 - m) + ic_noise_rms * torch.randn_like(m) * m).detach()
    v0 = (z2[:, 0] * (1 - m) + ic_noise_rms * torch.randn_like(m) * m).detach()
    xhat = rollout(omega, gamma, W, x0, v0, H)
    l_spec = mrstft_loss(xhat, x[:, :H], configs_for(H, configs))
    return {"spec": l_spec, "tf": l_tf, "total": lam_spec * l_spec + lam_tf * l_tf}


def train_step(model, opt, batch, H, tf_var, grad_clip=5.0):
    x, dxdt, d2x, ic_mask = batch
    opt.zero_grad(set_to_none=True)
    losses = spectral_rollout_loss(model, x, dxdt, d2x, H, tf_var, ic_mask)
    total = losses["total"]
    if torch.isfinite(total):  # the reference skips the update on a non-finite loss
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
    return total.detach()


# --------------------------------------------------------------------------------------------
# Synthetic batch and CLI

QUICK = {"horizons": ["32", "64"], "batch": 2, "length": 256, "n_terms": 3, "n_layers": 1, "d_state": 2, "d_conv": 4,
         "expand": 2, "repeats": 1, "warmup": 0}
FLAGS = cli.flag_set()
shared_flags.define_horizons(FLAGS, "length")
flags.DEFINE_integer("batch", 8, "Segments per step B.", flag_values=FLAGS)
flags.DEFINE_integer("length", 2205, "Segment length L in samples.", flag_values=FLAGS)
flags.DEFINE_integer("n_terms", 15, "Polynomial nTerms, P = nTerms + 1.", flag_values=FLAGS)
flags.DEFINE_integer("n_layers", 3, "Mamba layers per encoder.", flag_values=FLAGS)
flags.DEFINE_integer("d_state", 4, "Mamba state size N.", flag_values=FLAGS)
flags.DEFINE_integer("d_conv", 4, "Mamba conv width.", flag_values=FLAGS)
flags.DEFINE_integer("expand", 10, "Mamba expand factor.", flag_values=FLAGS)
shared_flags.define_repeats(FLAGS, "steps", repeats=3)
flags.DEFINE_float("lr", 1e-3, "Adam learning rate.", flag_values=FLAGS)
flags.DEFINE_float("grad_clip", 5.0, "Gradient-norm clip.", flag_values=FLAGS)
flags.DEFINE_integer("threads", None, "torch.set_num_threads (default: torch's choice).", flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the parameters and the batch.", flag_values=FLAGS)
flags.DEFINE_bool("keep_denormals", False, "Do not flush denormals to zero (torch's default; XLA on CPU flushes "
                  "them).", flag_values=FLAGS)
shared_flags.define_quick(FLAGS, QUICK)


def synthetic_batch(B: int, L: int, seed: int = 0):
    """The JAX benchmarks' fixed batch (`synthetic.harmonic_batch`: harmonic tones at 44.1 kHz, the
    first half cold start / ONSET) as torch tensors (x, dxdt, d2x, ic_mask)."""
    from synthetic import harmonic_batch  # benchmarks/synthetic.py (NumPy data, needs ouroboros_jax)

    b = harmonic_batch(B, L, float(SR), 1.0, seed)
    return (torch.from_numpy(np.asarray(b.x)), torch.from_numpy(np.asarray(b.dxdt)),
            torch.from_numpy(np.asarray(b.d2x)), torch.from_numpy(np.asarray(b.cold_start)))


def configure(threads: int | None, keep_denormals: bool) -> bool:
    """torch's threads and denormal mode; returns whether denormals are flushed."""
    if threads:
        torch.set_num_threads(threads)
    # XLA on CPU flushes denormals to zero; torch does not by default, and the cold-start rollout
    # (|x| ~ 1e-3 raised to powers up to 15) then runs on denormals, 10-40x slower.
    return torch.set_flush_denormal(not keep_denormals) and not keep_denormals


def step_runner(batch: int, length: int, n_terms: int, n_layers: int, d_state: int, d_conv: int, expand: int,
                lr: float = 1e-3, grad_clip: float = 5.0, seed: int = 0):
    """`run(H)`: one training step at horizon H from the same state every call."""
    torch.manual_seed(seed)
    model = Ouroboros(n_terms, n_layers, d_state, d_conv, expand)
    data = synthetic_batch(batch, length, seed)
    tf_var = max(float(data[2].double().var(unbiased=True)), 1e-6)
    params = list(model.parameters())
    initial = [q.detach().clone() for q in params]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8)

    def run(H):
        # Every timed call starts from the same state (initial parameters, fresh Adam), as the JAX
        # benchmark does, so every call does the same work; the reset is ~50 tiny copies.
        with torch.no_grad():
            for q, q0 in zip(params, initial):
                q.copy_(q0)
        opt.state.clear()
        return train_step(model, opt, data, H, tf_var, grad_clip)

    return run


@report_input_errors
def main(argv) -> None:
    shared_flags.begin(argv, FLAGS, QUICK)
    a = FLAGS
    flush = configure(a.threads, a.keep_denormals)
    horizons = shared_flags.checked_horizons(FLAGS, "horizons", "length")
    run = step_runner(a.batch, a.length, a.n_terms, a.n_layers, a.d_state, a.d_conv, a.expand, a.lr, a.grad_clip,
                      a.seed)

    device = {"platform": "cpu", "kind": "torch_cpu", "count": 1, "cpu": platform.processor() or platform.machine()}
    for H in horizons:
        stats = timing.measure(lambda: run(H), lambda r: r, repeats=a.repeats, warmup=a.warmup)
        timing.emit({
            "benchmark": "train_step", "what": "train_step", "impl": "torch_eager",
            "B": a.batch, "L": a.length, "P": a.n_terms + 1, "n_layers": a.n_layers, "d_state": a.d_state,
            "d_conv": a.d_conv, "expand": a.expand, "H": H, "n_stft_configs": len(configs_for(H)),
            "config": {"n_poly": a.n_terms + 1, "n_layers": a.n_layers, "d_state": a.d_state, "d_conv": a.d_conv,
                       "expand_factor": a.expand, "batch": a.batch, "segment_len": a.length, "horizon": H,
                       "dtype": "float32"},
            "quick": a.quick, "device": device, "versions": {**timing.versions(), "torch": torch.__version__},
            "torch_threads": torch.get_num_threads(), "flush_denormal": flush, **stats,
            "samples_per_s": a.batch * H / stats["median_s"],
        })


if __name__ == "__main__":
    cli.run(main, FLAGS)
