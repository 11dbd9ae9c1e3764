"""Other tools' annotation formats through crowsetta: round trips, syllable choice, conversion, errors.

Every format's files are written by crowsetta itself, except Praat TextGrids and the
BirdsongRecognition XML, which crowsetta only reads: those are written here from the formats'
own layout. Times are whole samples so that the sample-counting formats are exact too.
"""

import json
import pathlib
import subprocess
import sys

import crowsetta
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from ouroboros_jax.data import (
    ANNOTATION_FORMATS,
    AnnotationSource,
    DataConfig,
    SamplerConfig,
    read_labelled_annotations,
)
from ouroboros_jax.data.annotation_formats import convert_directory
from ouroboros_jax.data.annotations import write_annotations
from ouroboros_jax.data.vocalisations import cold_start_window
from ouroboros_jax.errors import InputError
from ouroboros_jax.training.synthesis import synthesize

# crowsetta's writers use a pandas call that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Passing a dict to DataFrame.from_records")

SR = 8000
N_RECORDINGS = 6
# Syllables of every recording; odd recordings swap the labels, so some start with a "b".
SYLLABLES = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])
SAMPLER = dict(context_len=0.02, silence_prefix_ms=5, silence_suffix_ms=5, edge_ms=2, max_segs=0,
               silence_pad_samples=100)
from tests.helpers import load_data


def labels_of(k: int) -> np.ndarray:
    return np.array(["a", "b", "a", "b"] if k % 2 == 0 else ["b", "a", "b", "a"])


def stems():
    return [f"rec{k}" for k in range(N_RECORDINGS)]


def _boxes(syllables, labels, time_columns, label_column):
    return pd.DataFrame({time_columns[0]: syllables[:, 0], time_columns[1]: syllables[:, 1], label_column: labels,
                         "low_freq_hz": 500.0, "high_freq_hz": 3000.0})


def _textgrid(syllables, labels) -> str:
    """A Praat TextGrid (long text format) with one interval tier; gaps are empty intervals."""
    edges = [0.0, *map(float, syllables.ravel()), 1.0]
    texts = [t for label in labels for t in ("", label)] + [""]
    intervals = "".join(f'        intervals [{i + 1}]:\n            xmin = {lo!r}\n            xmax = {hi!r}\n'
                        f'            text = "{text}"\n'
                        for i, (lo, hi, text) in enumerate(zip(edges, edges[1:], texts)))
    return ('File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\nxmax = 1\ntiers? <exists>\nsize = 1\n'
            'item []:\n    item [1]:\n        class = "IntervalTier"\n        name = "syllables"\n        xmin = 0\n'
            f'        xmax = 1\n        intervals: size = {len(texts)}\n{intervals}')


def _birdsong_xml(tables) -> str:
    """Koumura's Annotation.xml: one Sequence per recording, notes in samples from the sequence start."""
    sequences = []
    for name, (syllables, labels) in tables.items():
        start = round(syllables[0, 0] * SR)
        notes = "".join(f"<Note><Position>{round(on * SR) - start}</Position><Length>{round((off - on) * SR)}"
                        f"</Length><Label>{label}</Label></Note>" for (on, off), label in zip(syllables, labels))
        sequences.append(f"<Sequence><WaveFileName>{name}</WaveFileName><Position>{start}</Position><Length>"
                         f"{round((syllables[-1, 1] - syllables[0, 0]) * SR)}</Length><NumNote>{len(labels)}</NumNote>"
                         f"{notes}</Sequence>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Sequences><NumSequence>{len(sequences)}</NumSequence>'
            f'{"".join(sequences)}</Sequences>')


def write_annotation_files(fmt: str, folder: pathlib.Path, audio: pathlib.Path, tables: dict) -> None:
    """The annotations `tables` ({audio file name: (syllables (K, 2) s, labels (K,))}) in format `fmt`."""
    formats = crowsetta.formats
    for name, (syllables, labels) in tables.items():
        stem = pathlib.Path(name).stem
        on, off = syllables[:, 0], syllables[:, 1]
        if fmt == "ours":
            write_annotations(folder / f"{stem}.txt", syllables, labels)
        elif fmt == "aud-seq":
            formats.by_name(fmt)(start_times=on, end_times=off, labels=labels, annot_path=folder).to_file(
                folder / f"{stem}.txt")
        elif fmt == "aud-bbox":
            df = _boxes(syllables, labels, ("begin_time_s", "end_time_s"), "label")
            formats.by_name(fmt)(df=df, annot_path=folder).to_file(folder / f"{stem}.txt")
        elif fmt == "notmat":
            formats.by_name(fmt)(onsets=on, offsets=off, labels=labels, annot_path=folder,
                                 audio_path=audio / name).to_file(
                samp_freq=SR, threshold=5000, min_syl_dur=0.02, min_silent_dur=0.002, fname=audio / name, dst=folder)
        elif fmt == "raven":
            df = _boxes(syllables, labels, ("begin_time_s", "end_time_s"), "annotation")
            formats.by_name(fmt)(df=df, annot_path=folder, annot_col="Annotation").to_file(
                folder / f"{stem}.Table.1.selections.txt")
        elif fmt == "simple-seq":
            formats.by_name(fmt)(onsets_s=on, offsets_s=off, labels=labels, annot_path=folder).to_file(
                folder / f"{stem}.csv")
        elif fmt == "timit":
            samples = np.round(syllables * SR).astype(int)
            formats.by_name(fmt)(begin_samples=samples[:, 0], end_samples=samples[:, 1], text=labels,
                                 annot_path=folder).to_file(folder / f"{stem}.phn")
        elif fmt == "textgrid":
            (folder / f"{stem}.TextGrid").write_text(_textgrid(syllables, labels))
    if fmt == "generic-seq":
        annotations = [crowsetta.Annotation(annot_path=folder / "annotations.csv", notated_path=audio / name,
                                            seq=crowsetta.Sequence.from_keyword(onsets_s=s[:, 0], offsets_s=s[:, 1],
                                                                                labels=lab))
                       for name, (s, lab) in tables.items()]
        formats.by_name(fmt)(annots=annotations).to_file(folder / "annotations.csv", basename=True)
    elif fmt == "birdsong-recognition-dataset":
        (folder / "Annotation.xml").write_text(_birdsong_xml(tables))


def labelled_bird(tmp_path, fmt, separate=False):
    """(audio folder, annotation folder): recordings of tagged samples (any window names its file)."""
    audio = tmp_path / "audio"
    folder = tmp_path / "annotations" if separate else audio
    audio.mkdir()
    folder.mkdir(exist_ok=True)
    for k, stem in enumerate(stems()):
        sf.write(audio / f"{stem}.wav", (k * 3000 + np.arange(SR) % 2000).astype(np.int16), SR, subtype="PCM_16")
    write_annotation_files(fmt, folder, audio, {f"{s}.wav": (SYLLABLES, labels_of(k)) for k, s in enumerate(stems())})
    return audio, folder


def test_every_format_we_name_is_tested():
    assert set(ANNOTATION_FORMATS) == {"ours", "aud-bbox", "aud-seq", "birdsong-recognition-dataset", "generic-seq",
                                       "notmat", "raven", "simple-seq", "textgrid", "timit"}


@pytest.mark.parametrize("fmt", ANNOTATION_FORMATS)
def test_round_trip_reads_the_syllables_and_labels(tmp_path, fmt):
    audio, folder = labelled_bird(tmp_path, fmt, separate=True)
    source = AnnotationSource(fmt, folder)
    for k, stem in enumerate(stems()):
        syllables, labels = source.read(audio / f"{stem}.wav", 1.0, SR)
        np.testing.assert_allclose(syllables, SYLLABLES, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(labels, labels_of(k))


def _allowed_starts(syllables, sample_rate, sizes):
    """[first, last] window starts a syllable can give: ONSET at on - prefix ... OFFSET at off + suffix - L."""
    length = round(sizes.context_len * sample_rate)
    on, off = np.round(syllables * sample_rate).astype(int).T
    return np.stack([on - round(sizes.silence_prefix_ms * sample_rate / 1000),
                     off + round(sizes.silence_suffix_ms * sample_rate / 1000) - length], axis=-1)


@pytest.mark.parametrize("fmt", ANNOTATION_FORMATS)
def test_one_syllable_type_trains_alone(tmp_path, fmt):
    """Windows and held-out vocalisations of --syllables=a come only from syllables labelled a."""
    audio, folder = labelled_bird(tmp_path, fmt, separate=fmt != "ours")
    data = load_data(audio, syllables="a", annotation_format=fmt,
                     annotation_dir=None if fmt == "ours" else str(folder), **SAMPLER)
    sampler = SamplerConfig(**{k: v for k, v in SAMPLER.items() if k != "silence_pad_samples"})
    for (file_index, start) in data.window_sources:
        k = int(data.files.train[file_index].stem[3:])
        ranges = _allowed_starts(SYLLABLES, SR, sampler)
        inside = (ranges[:, 0] <= start) & (start <= ranges[:, 1])
        assert inside.any() and set(labels_of(k)[inside]) == {"a"}, (k, start)
    # Every window of every a syllable of the training files (max_segs=0), so both labels' worth of files count.
    a_windows = {(i, s) for i, s in map(tuple, data.window_sources)}
    assert len(a_windows) == len(data.x) > 0
    for part, vocalisations in ((data.files.val, data.val_vocalisations), (data.files.test, data.test_vocalisations)):
        (path,) = part
        x, _ = sf.read(path, dtype="int16")
        first_a = SYLLABLES[labels_of(int(path.stem[3:])) == "a"][0]
        assert vocalisations.onsets[0] == first_a[0] and vocalisations.lead_ins[0] <= 100
        np.testing.assert_array_equal(vocalisations.window(0), cold_start_window(
            x / 32768.0, SR, *first_a, int(vocalisations.lead_ins[0])))


def test_all_syllables_without_a_choice(tmp_path):
    audio, folder = labelled_bird(tmp_path, "raven")
    everything = load_data(str(audio), annotation_format="raven", **SAMPLER)
    only_a = load_data(str(audio), annotation_format="raven", syllables="a", **SAMPLER)
    only_b = load_data(str(audio), annotation_format="raven", syllables="b", **SAMPLER)
    both = load_data(str(audio), annotation_format="raven", syllables="b,a", **SAMPLER)
    assert len(everything.x) == len(only_a.x) + len(only_b.x) == len(both.x)


def test_an_unknown_label_lists_the_labels_with_counts(tmp_path):
    audio, _ = labelled_bird(tmp_path, "ours")
    with pytest.raises(InputError, match=r"^--syllables=a,C: no syllable is labelled C in --data_dir=.*; the labels "
                                         r"there are a \(12\), b \(12\)$"):
        load_data(str(audio), syllables="a,C", **SAMPLER)


def test_unlabelled_annotations_cannot_be_chosen_from(tmp_path):
    audio, _ = labelled_bird(tmp_path, "ours")
    for stem in stems():
        write_annotations(audio / f"{stem}.txt", SYLLABLES)
    with pytest.raises(InputError, match=r"--syllables=a: the 24 syllables in .* have no labels; label them"):
        load_data(str(audio), syllables="a", **SAMPLER)


@pytest.mark.parametrize("value", ["a,,b", "a b", ","])
def test_malformed_syllables_flag(value):
    with pytest.raises(InputError, match=r"--syllables=.*: expected labels separated by commas"):
        DataConfig("x", syllables=value)


def test_an_unknown_format_lists_the_formats():
    with pytest.raises(InputError, match=r"--annotation_format=praat: not a format we read; choose one of ours, "):
        DataConfig("x", annotation_format="praat")


# The file each per-recording format expects for rec0.wav, and the one file of the others.
EXPECTED_FILE = {"ours": "rec0.txt", "aud-seq": "rec0.txt", "aud-bbox": "rec0.txt", "notmat": "rec0.wav.not.mat",
                 "raven": "rec0.Table.1.selections.txt", "simple-seq": "rec0.csv", "textgrid": "rec0.TextGrid",
                 "timit": "rec0.phn", "generic-seq": "annotations.csv",
                 "birdsong-recognition-dataset": "Annotation.xml"}


@pytest.mark.parametrize("fmt", ANNOTATION_FORMATS)
def test_a_malformed_file_is_one_line_naming_it(tmp_path, fmt):
    audio, folder = labelled_bird(tmp_path, fmt)
    bad = folder / EXPECTED_FILE[fmt]
    bad.write_bytes(b"\x00\x01 this is not an annotation file\n7\n")
    with pytest.raises(InputError) as error:
        AnnotationSource(fmt).read(audio / "rec0.wav", 1.0, SR)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("fmt", sorted(set(ANNOTATION_FORMATS) - {"generic-seq", "birdsong-recognition-dataset"}))
def test_a_missing_file_names_the_file_expected(tmp_path, fmt):
    audio, folder = labelled_bird(tmp_path, fmt, separate=True)
    (folder / EXPECTED_FILE[fmt]).unlink()
    with pytest.raises(InputError, match=rf"rec0\.wav: no {fmt} annotation file {EXPECTED_FILE[fmt]} "
                                         rf"in --annotation_dir="):
        AnnotationSource(fmt, folder).read(audio / "rec0.wav", 1.0, SR)


@pytest.mark.parametrize("fmt", ["generic-seq", "birdsong-recognition-dataset"])
def test_one_file_formats_need_the_recording_listed_and_one_file(tmp_path, fmt):
    audio, folder = labelled_bird(tmp_path, fmt, separate=True)
    sf.write(audio / "extra.wav", np.zeros(SR, np.int16), SR, subtype="PCM_16")
    one_file = folder / EXPECTED_FILE[fmt]
    with pytest.raises(InputError, match=rf"extra\.wav: {one_file} lists no annotations for extra\.wav"):
        AnnotationSource(fmt, folder).read(audio / "extra.wav", 1.0, SR)
    # The file may be named directly; a second candidate in the folder is ambiguous.
    assert len(AnnotationSource(fmt, one_file).read(audio / "rec0.wav", 1.0, SR)[0]) == 4
    (folder / f"copy{one_file.suffix}").write_bytes(one_file.read_bytes())
    with pytest.raises(InputError, match=r"expected one \.(csv|xml) file in .*annotations, found 2; name the file"):
        AnnotationSource(fmt, folder).read(audio / "rec0.wav", 1.0, SR)


def test_a_syllable_outside_the_recording_is_named_by_file_and_number(tmp_path):
    audio, folder = labelled_bird(tmp_path, "aud-seq")
    write_annotation_files("aud-seq", folder, audio, {"rec0.wav": (np.array([[0.1, 0.2], [0.9, 1.5]]),
                                                                   np.array(["a", "b"]))})
    with pytest.raises(InputError, match=r"rec0\.txt syllable 2: syllable 0\.9-1\.5 s lies outside the recording"):
        AnnotationSource("aud-seq").read(audio / "rec0.wav", 1.0, SR)


def test_a_textgrid_with_several_interval_tiers_is_ambiguous(tmp_path):
    audio, folder = labelled_bird(tmp_path, "textgrid")
    text = (folder / "rec0.TextGrid").read_text()
    tier = text[text.index("    item [1]:"):].replace("item [1]:", "item [2]:").replace('"syllables"', '"notes"')
    (folder / "rec0.TextGrid").write_text(text.replace("size = 1", "size = 2", 1) + tier)
    with pytest.raises(InputError, match=r"rec0\.TextGrid: cannot read it as textgrid annotations \(it has 2 interval "
                                         r"tiers; keep only the tier of the syllables\)"):
        AnnotationSource("textgrid").read(audio / "rec0.wav", 1.0, SR)


# --- convert_annotations: our files from any of them -----------------------------------------

@pytest.mark.parametrize("fmt", sorted(set(ANNOTATION_FORMATS) - {"ours"}))
def test_conversion_writes_our_files_with_the_labels(tmp_path, fmt):
    audio, folder = labelled_bird(tmp_path, fmt, separate=True)
    out = tmp_path / "ours"
    results = convert_directory(audio, AnnotationSource(fmt, folder), out)
    assert [t.name for t, _, _ in results] == [f"{s}.txt" for s in stems()]
    for k, stem in enumerate(stems()):
        syllables, labels = read_labelled_annotations(out / f"{stem}.txt", 1.0, SR)
        np.testing.assert_allclose(syllables, SYLLABLES, rtol=0, atol=5e-7)  # 6 decimals in the file
        np.testing.assert_array_equal(labels, labels_of(k))


def test_conversion_refuses_what_it_cannot_write_and_writes_nothing(tmp_path):
    audio, folder = labelled_bird(tmp_path, "simple-seq", separate=True)
    out = tmp_path / "ours"
    with pytest.raises(InputError, match="--annotation_format=ours: these are our files already"):
        convert_directory(audio, AnnotationSource("ours"), out)
    write_annotation_files("simple-seq", folder, audio, {"rec3.wav": (SYLLABLES[:1], np.array(["A B"]))})
    with pytest.raises(InputError, match=r"rec3\.csv: the label 'A B' has whitespace, but a label in rec3\.txt is "
                                         r"one token; rename it \(e\.g\. 'A_B'\)"):
        convert_directory(audio, AnnotationSource("simple-seq", folder), out)
    assert not out.exists()  # rec0-rec2 were read, not written
    out.mkdir()
    (out / "rec0.txt").write_text("0.1 0.2 hand-made\n")
    write_annotation_files("simple-seq", folder, audio, {"rec3.wav": (SYLLABLES, labels_of(3))})
    with pytest.raises(InputError, match=r"1 annotation file\(s\) already exist, e\.g\. rec0\.txt; pass --overwrite"):
        convert_directory(audio, AnnotationSource("simple-seq", folder), out)
    assert (out / "rec0.txt").read_text() == "0.1 0.2 hand-made\n"
    convert_directory(audio, AnnotationSource("simple-seq", folder), out, overwrite=True)
    assert read_labelled_annotations(out / "rec0.txt", 1.0, SR)[1].tolist() == ["a", "b", "a", "b"]


def convert_cli(*flags):
    return subprocess.run([sys.executable, "-m", "ouroboros_jax.convert_annotations", *flags], capture_output=True,
                          text=True, timeout=300)


def test_convert_cli_reports_and_fails_in_one_line(tmp_path):
    audio, folder = labelled_bird(tmp_path, "textgrid")
    result = convert_cli(f"--audio_dir={audio}", "--annotation_format=textgrid")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"wrote 6 annotation files to {audio}: 24 syllables, labels a (12), b (12)"
    (folder / "rec2.TextGrid").write_text("File type = \"ooTextFile\"\nnot a grid\n")
    result = convert_cli(f"--audio_dir={audio}", "--annotation_format=textgrid", "--overwrite")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder / 'rec2.TextGrid'}: cannot read it as textgrid")


@pytest.mark.slow
def test_a_bird_in_another_format_trains_on_one_type_from_the_command_line(tmp_path):
    """`train --annotation_format --annotation_dir --syllables`; the run records them, and synthesize's
    --row then counts the rows of the run's type."""
    audio, folder = labelled_bird(tmp_path, "raven", separate=True)
    out = tmp_path / "run"
    tiny = ["--context_len=0.02", "--silence_prefix_ms=5", "--silence_suffix_ms=5", "--edge_ms=2", "--max_segs=16",
            "--n_kernels=2", "--n_layers=1", "--d_state=2", "--expand_factor=1", "--h_min=64", "--h_max=64",
            "--h_schedule=const", "--spec_configs=32,8;64,16", "--spec_warmup_epochs=1", "--n_epochs=1",
            "--n_seeds=1", "--n_val_vocs=1", "--n_test_vocs=1", "--min_eval_vocs=1", "--silence_pad_samples=100"]
    result = subprocess.run([sys.executable, "-m", "ouroboros_jax.train", f"--data_dir={audio}", f"--out_dir={out}",
                             "--annotation_format=raven", f"--annotation_dir={folder}", "--syllables=a", *tiny],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "PIPELINE DONE" in result.stdout, result.stderr[-3000:]
    manifest = json.loads((out / "selected_model.json").read_text())
    assert (manifest["syllables"], manifest["annotation_format"], manifest["annotation_dir"]) == (
        ["a"], "raven", str(folder))
    recorded = json.loads((out / "run.json").read_text())["config"]["data"]
    assert (recorded["syllables"], recorded["annotation_format"]) == (["a"], "raven")
    write_annotations(tmp_path / "rec1.txt", SYLLABLES, labels_of(1))  # b a b a
    sung = synthesize(out, audio / "rec1.wav", tmp_path / "sung.wav", txt=tmp_path / "rec1.txt")
    assert (sung.onset_s, sung.offset_s) == (0.3, 0.4)
