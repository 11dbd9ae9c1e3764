"""A trained run scored on recordings: its held-out test files, or any others (`python -m ouroboros_jax.evaluate`).

    scores = score_run("runs/finch", data_dir="other_day/", members="all")

Every cold-start vocalisation of the chosen syllable types in the recordings is scored, each on
its own samples, as the run scores its validation and test vocalisations (docs/method.md,
"Cold-start vocalisations"), with no cap on how many: the run's test files by default, every
file of `data_dir` when it is given (another day of the same bird, say). The lead-in settings
are the run's.
"""

import dataclasses
import pathlib

import numpy as np

from ouroboros_jax.data import load_training_data
from ouroboros_jax.data.audio import list_audio_files
from ouroboros_jax.data.recordings import Recording, load_recordings
from ouroboros_jax.data.syllable_labels import parse_syllables
from ouroboros_jax.data.vocalisations import Vocalisations, cold_start_vocalisations
from ouroboros_jax.errors import InputError
from ouroboros_jax.objective.derivatives import first_derivative
from ouroboros_jax.scoring.evaluation import Autonomy, autonomous_outputs_jit, autonomy_summary
from ouroboros_jax.training.records import VOCALISATION_COLUMNS, vocalisation_rows
from ouroboros_jax.training.run_state import score_members
from ouroboros_jax.training.sweep import member_name
from ouroboros_jax.training.trained import TrainedRun, load_run

MEMBERS = ("selected", "all")
_ALL = 10**9  # no cap on the vocalisations scored


@dataclasses.dataclass(frozen=True)
class RunScores:
    """What `score_run` found: the vocalisations, each scored member's `Autonomy` on them and its raw
    autonomous outputs (V, L) (`Vocalisations.integrate`), by the member's name."""

    run: TrainedRun
    source: str
    syllables: tuple[str, ...]
    vocalisations: Vocalisations
    scores: dict
    outputs: dict

    def rows(self) -> list[tuple]:
        """scores.csv: ("member", *VOCALISATION_COLUMNS) per member and vocalisation."""
        return [(name, *row) for name, score in self.scores.items()
                for row in vocalisation_rows(self.vocalisations, score, self.run.sample_rate)]

    def summary(self) -> dict:
        """summary.json: where the vocalisations came from and each member's summary and breakdown."""
        vocs = self.vocalisations
        return {"run_dir": str(self.run.run_dir), "epoch": self.run.epoch, "source": self.source,
                "syllables": ",".join(self.syllables), "n_vocalisations": len(vocs),
                "n_files": len(set(vocs.files)), "members": {
                    name: {"summary": autonomy_summary(score), "breakdown": score.breakdown}
                    for name, score in self.scores.items()}}


COLUMNS = ("member", *VOCALISATION_COLUMNS)


def _recordings(run: TrainedRun, data_dir: str | None) -> tuple[str, list[Recording]]:
    """(where from, the recordings): the run's test files, or every file of `data_dir`."""
    data = run.config.data
    if data_dir is None:
        source, paths = "the run's test files", load_training_data(data, run.config.sampler, run.config.seed).files.test
    else:
        source, paths = f"the files of {data_dir}", list_audio_files(pathlib.Path(data_dir), "--data_dir")
    recordings = load_recordings(paths, data.channel, data.annotations)
    if recordings[0].sample_rate != run.sample_rate:
        raise InputError(f"{recordings[0].path}: sampled at {recordings[0].sample_rate} Hz but the run {run.run_dir} "
                         f"at {run.sample_rate} Hz; resample the recordings to {run.sample_rate} Hz")
    return source, recordings


def score_run(run_dir, data_dir: str | None = None, syllables: str | None = None,
              members: str = "selected") -> RunScores:
    """Scores the newest checkpoint of a run on cold-start vocalisations.

    Args:
      run_dir: the run's --out_dir.
      data_dir: recordings to score on; None: the run's test files.
      syllables: the syllable types, comma-separated; None: the run's --syllables.
      members: "selected" (the run's selected member) or "all" (every member of the checkpoint).

    Raises:
      InputError: not a run, recordings at another sample rate, no vocalisation of the types.
    """
    if members not in MEMBERS:
        raise InputError(f"--members={members}: must be one of {', '.join(MEMBERS)}")
    run = load_run(run_dir)
    data = run.config.data
    types = data.syllables if syllables is None else parse_syllables(syllables)
    source, recordings = _recordings(run, data_dir)
    min_lead_in = int(round(data.min_lead_in_ms / 1000.0 * run.sample_rate))
    vocs = cold_start_vocalisations(recordings, types, _ALL, data.silence_pad_samples, min_lead_in)
    if not len(vocs):
        raise InputError(f"--syllables={','.join(types)}: {source} hold no cold-start vocalisation of "
                         f"{'these types' if types else 'any type'} (a syllable with a lead-in of at least "
                         f"{data.min_lead_in_ms:g} ms); choose other --syllables or recordings")
    chosen = [run.selected_seed] if members == "selected" else list(run.seed_ids)
    scores: dict[str, Autonomy] = {}
    outputs: dict[str, np.ndarray] = {}
    for member in chosen:
        name = member_name(run.config, member)
        outputs[name] = member_outputs(run, member, vocs)
        (scores[name],) = score_members(vocs, outputs[name][None], run.sample_rate)
    return RunScores(run, source, types, vocs, scores, outputs)


def member_outputs(run: TrainedRun, member: int, vocalisations: Vocalisations) -> np.ndarray:
    """(V, L) the member's raw autonomous outputs on the vocalisations, integrated from each one's
    first sample as the run integrates them (`Vocalisations.integrate`)."""
    model = run.model(member)
    return vocalisations.integrate(lambda audio: autonomous_outputs_jit(
        model, audio, first_derivative(audio).astype(np.float32), run.setup.rollout))
