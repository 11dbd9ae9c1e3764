"""TensorBoard logging (training/logbook.py): an epoch's scalars written from its metric arrays,
media for the best --media_seeds seeds only, nothing from a process that does not write."""

import numpy as np
from tensorboardX.proto import event_pb2

from ouroboros_jax.scoring.evaluation import Autonomy
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.events import read_scalars
from ouroboros_jax.training.logbook import STEP_SCALARS, Logbook
from ouroboros_jax.training.step import StepMetrics

BATCHES = 5
SCORE = {"spec_corr": 0.5, "amp_pen": 0.1, "pitch_pen": 0.2, "bounded_frac": 1.0, "lead_in_db": -35.0,
         "onset_delay_ms": 2.0}


def epoch_metrics(rng, n_seeds):
    fields = {name: rng.uniform(0.1, 1.0, (n_seeds, BATCHES)).astype(np.float32) for name in StepMetrics._fields}
    fields["skipped"] = np.zeros((n_seeds, BATCHES), np.int32)
    fields["skipped"][1, 2] = 1
    fields["horizon"] = np.full((n_seeds, BATCHES), 64, np.int32)
    return StepMetrics(**fields)


def config(**overrides):
    return RunConfig.of(**{"data_dir": "@example", "n_epochs": 3, "n_seeds": 3, **overrides})


def test_an_epoch_s_scalars_are_its_metrics_at_their_global_steps(tmp_path):
    rng = np.random.default_rng(0)
    metrics = epoch_metrics(rng, 3)
    ran = np.ones((3, BATCHES), bool)
    ran[2, 3:] = False  # seed 2 stopped after its third step of the epoch
    scores = [Autonomy(-1.0, None, SCORE), Autonomy(-2.0, None, SCORE), Autonomy(-3.0, None, SCORE)]
    # Seeds 0, 4 and 7 of 8 (culling kept them): TensorBoard folders seed0, seed4, seed7.
    with Logbook(tmp_path, config(n_seeds=8), BATCHES) as logbook:
        logbook.epoch(1, [0, 4, 7], metrics, ran, scores, np.array([True, True, False]), [1.0])
    logged = [tag for tag in STEP_SCALARS if tag in {"Loss/spec", "Loss/tf", "Loss/total", "Train/H",
                                                     "Train/grad_norm", "Health/rms_ratio", "Train/lam_spec_t"}]
    for k, seed_id in enumerate([0, 4, 7]):
        scalars = read_scalars(tmp_path / f"seed{seed_id}")
        kept = ran[k] & (metrics.skipped[k] == 0)
        for tag in logged:
            steps, values = scalars[tag]
            np.testing.assert_array_equal(steps, BATCHES + np.flatnonzero(kept))  # epoch 1 starts at step 5
            np.testing.assert_array_equal(values, getattr(metrics, STEP_SCALARS[tag])[k][kept])
        nan_steps = scalars.get("Loss/nan_skip", (np.array([]), None))[0]
        np.testing.assert_array_equal(nan_steps, BATCHES + np.flatnonzero(ran[k] & (metrics.skipped[k] != 0)))
        assert [a.tolist() for a in scalars["Val/autonomy"]] == [[2 * BATCHES - 1], [scores[k].score]]
        assert scalars["Seed/active"][1].tolist() == [float(k < 2)]
        assert "Loss/env" not in scalars  # --lam_env 0


def _media_seeds(tmp_path) -> set:
    seeds = set()
    for path in tmp_path.glob("seed*/events.out.tfevents.*"):
        data = path.read_bytes()
        offset = 0
        while offset + 12 <= len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            if any(v.tag == "Media/specgram" for v in event.summary.value):
                seeds.add(int(path.parent.name[4:]))
    return seeds


def test_media_are_drawn_for_the_best_active_seeds_only(tmp_path):
    rng = np.random.default_rng(1)
    # Seed 3 scores best but has stopped; then seeds 1, 4, 0, 2 by validation autonomy.
    scores = [Autonomy(score, None, SCORE) for score in (-0.5, -0.2, -0.9, 0.0, -0.3)]
    active = np.array([True, True, True, False, True])
    with Logbook(tmp_path, config(media_seeds=2, n_seeds=5), BATCHES) as logbook:
        logbook.media(0, [0, 1, 2, 3, 4], active, scores, rng.normal(0, 0.1, 400), rng.normal(0, 0.1, (5, 400)),
                      8000)
    assert _media_seeds(tmp_path) == {1, 4}


def test_a_process_that_does_not_write_logs_nothing(tmp_path, capsys):
    rng = np.random.default_rng(2)
    scores = [Autonomy(-1.0, None, SCORE)] * 3
    with Logbook(tmp_path, config(), BATCHES, writes=False) as logbook:
        logbook.epoch(0, [0, 1, 2], epoch_metrics(rng, 3), np.ones((3, BATCHES), bool), scores, np.ones(3, bool),
                      [1.0])
        logbook.media(0, [0, 1, 2], np.ones(3, bool), scores, np.zeros(400), np.zeros((3, 400)), 8000)
    assert list(tmp_path.iterdir()) == []
