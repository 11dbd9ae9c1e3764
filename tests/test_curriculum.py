"""Horizon curriculum and warm-ups: reference tables, the examples of docs/method.md, ramps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ouroboros_jax.errors import InputError
from ouroboros_jax.objective.curriculum import (
    HORIZON_SCHEDULES,
    distinct_horizons,
    horizon_for_epoch,
    pow2_horizon_buckets,
    program_horizons,
    warmup_weights,
)
from ouroboros_jax.objective.losses import LossWeights


def test_horizon_tables_match_reference(golden_json):
    tables = golden_json["horizon_tables"]
    assert {key.split("/")[0] for key in tables} == set(HORIZON_SCHEDULES)
    for key, expected in tables.items():  # "schedule/n_epochs/h_min/h_max"
        schedule, n_epochs, h_min, h_max = key.split("/")
        n_epochs, h_min, h_max = int(n_epochs), int(h_min), int(h_max)
        got = [horizon_for_epoch(e, n_epochs, h_min, h_max, schedule) for e in range(n_epochs)]
        assert got == expected, key


@pytest.mark.parametrize(
    "epoch, horizon", [(0, 512), (10, 679), (25, 1039), (27, 1099), (28, 1131), (49, 2048)]
)
def test_geom_examples(epoch, horizon):
    assert horizon_for_epoch(epoch, 50, 512, 2048, "geom") == horizon


def test_pow2_epochs():
    horizons = [horizon_for_epoch(e, 50, 512, 2048, "pow2") for e in range(50)]
    assert horizons == [512] * 17 + [1024] * 17 + [2048] * 16


@pytest.mark.parametrize(
    "h_min, h_max, buckets",
    [
        (512, 2048, (512, 1024, 2048)),
        (300, 1000, (300, 600, 1000)),
        (256, 2000, (256, 512, 1024, 2000)),
        (512, 512, (512,)),
        (600, 1000, (600, 1000)),
    ],
)
def test_pow2_buckets(h_min, h_max, buckets):
    assert pow2_horizon_buckets(h_min, h_max) == buckets


def test_linear_rounds_half_to_even():
    # t = 1/2 lands exactly on 100.5 and 101.5: Python's round gives 100 and 102.
    assert horizon_for_epoch(1, 3, 100, 101, "linear") == 100
    assert horizon_for_epoch(1, 3, 101, 102, "linear") == 102


@pytest.mark.parametrize("schedule", HORIZON_SCHEDULES)
@pytest.mark.parametrize("n_epochs", [0, 1])
def test_single_epoch_runs_use_h_max(schedule, n_epochs):
    assert horizon_for_epoch(0, n_epochs, 512, 2048, schedule) == 2048


@pytest.mark.parametrize("epoch", [0, 13, 49])
def test_const_is_h_max(epoch):
    assert horizon_for_epoch(epoch, 50, 512, 2048, "const") == 2048


@pytest.mark.parametrize("schedule", ["geom", "linear", "pow2"])
def test_schedules_are_monotone_from_h_min_to_h_max(schedule):
    horizons = [horizon_for_epoch(e, 30, 256, 2048, schedule) for e in range(30)]
    assert horizons[0] == 256 and horizons[-1] == 2048
    assert all(a <= b for a, b in zip(horizons, horizons[1:]))
    assert all(isinstance(h, int) for h in horizons)


@pytest.mark.parametrize("n_epochs", [0, 1, 7])
def test_unknown_schedule_is_input_error(n_epochs):
    with pytest.raises(InputError, match="--h_schedule.*geom, linear, const, pow2.*'cosine'"):
        horizon_for_epoch(0, n_epochs, 512, 2048, "cosine")


@pytest.mark.parametrize("schedule", ["geom", "linear", "pow2"])
@pytest.mark.parametrize("h_min, h_max", [(0, 2048), (4096, 2048)])
def test_bad_horizon_range_is_input_error(schedule, h_min, h_max):
    with pytest.raises(InputError, match="--h_min"):
        horizon_for_epoch(0, 10, h_min, h_max, schedule)


def test_const_ignores_h_min():
    # The smoke recipe sets only --h_max 256 with --h_schedule const; h_min keeps its 512.
    assert distinct_horizons(10, 512, 256, "const") == (256,)


@pytest.mark.parametrize(
    "schedule, expected",
    [("pow2", (512, 1024, 2048)), ("const", (2048,))],
)
def test_distinct_horizons(schedule, expected):
    assert distinct_horizons(50, 512, 2048, schedule) == expected


def test_distinct_horizons_geom_is_ordered_set_of_table(golden_json):
    table = golden_json["horizon_tables"]["geom/50/512/2048"]
    assert distinct_horizons(50, 512, 2048, "geom") == tuple(sorted(set(table)))


WEIGHTS = LossWeights(lam_spec=2.0, lam_tf=3.0, lam_env=4.0, lam_env_log=5.0)


@pytest.mark.parametrize(
    "epoch, fraction",
    [(0, 0.0), (1, 0.2), (2, 0.4), (3, 0.6), (4, 0.8), (5, 1.0), (6, 1.0), (40, 1.0)],
)
def test_spec_warmup_ramp(epoch, fraction):
    w = warmup_weights(epoch, WEIGHTS, spec_warmup_epochs=5, env_warmup_epochs=0)
    np.testing.assert_allclose(w.lam_spec, 2.0 * fraction, rtol=1e-6)
    assert (w.lam_tf, w.lam_env, w.lam_env_log) == (3.0, 4.0, 5.0)


@pytest.mark.parametrize("epoch, fraction", [(0, 0.0), (1, 1 / 3), (2, 2 / 3), (3, 1.0), (9, 1.0)])
def test_env_warmup_shared_and_tf_never_ramped(epoch, fraction):
    w = warmup_weights(epoch, WEIGHTS, spec_warmup_epochs=0, env_warmup_epochs=3)
    np.testing.assert_allclose(
        (w.lam_env, w.lam_env_log), (4.0 * fraction, 5.0 * fraction), rtol=1e-6
    )
    assert (w.lam_spec, w.lam_tf) == (2.0, 3.0)


def test_warmup_under_jit_with_traced_epoch():
    ramped = jax.jit(lambda e: warmup_weights(e, WEIGHTS, 5, 4))
    for epoch in range(8):
        spec, env = min(epoch / 5, 1), min(epoch / 4, 1)
        w = ramped(jnp.int32(epoch))
        np.testing.assert_allclose(tuple(w), (2.0 * spec, 3.0, 4.0 * env, 5.0 * env), rtol=1e-6)


def test_program_horizons_group_by_the_stft_configs_kept():
    """blk445: geom 512 -> 2048 over 50 epochs; n_fft 1024 first fits at H 1024 (epoch 25:
    512 * 4^(25/49) = 1036.5, epoch 24: 1010.6), so 2 programs serve its 50 horizons."""
    configs = ((256, 64), (512, 128), (1024, 256))
    horizons = distinct_horizons(50, 512, 2048, "geom")
    programs = program_horizons(horizons, configs)
    assert programs == {h: 1010 if h < 1024 else 2048 for h in horizons}
    # The demo: pow2 128, 256, 512 with n_fft 64, 128, 256: 256 joins at H 256.
    assert program_horizons((128, 256, 512), ((64, 16), (128, 32), (256, 64))) == {128: 128, 256: 512, 512: 512}
    # No config fits below 256: each horizon gets its own fallback config.
    assert program_horizons((100, 120, 300), ((256, 64),)) == {100: 100, 120: 120, 300: 300}


def test_program_horizons_keep_the_envelope_radius():
    """The envelope filter's radius round(3 sigma) = 265 is capped at H - 1 below H 266."""
    programs = program_horizons((270, 300, 400), ((64, 16),), env_sigma=88.2)
    assert programs == {270: 400, 300: 400, 400: 400}
    assert program_horizons((200, 266, 300), ((64, 16),), env_sigma=88.2) == {200: 200, 266: 300, 300: 300}
