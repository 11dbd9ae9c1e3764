"""`python -m ouroboros_jax.convert_annotations`: another tool's annotations as our `<stem>.txt` files.

    python -m ouroboros_jax.convert_annotations --audio_dir=my_bird/ --annotation_format=notmat
    python -m ouroboros_jax.convert_annotations --audio_dir=Bird3/Wave --out_dir=bird3/ \
        --annotation_format=birdsong-recognition-dataset --annotation_dir=Bird3/Annotation.xml

reads the annotations of every recording of --audio_dir through crowsetta
(ouroboros_jax/data/annotation_formats.py, docs/data.md) and writes one `<stem>.txt` per
recording (onset, offset, label) in --out_dir. Training reads the other formats directly too
(`train --annotation_format`); converting once gives files that any tool reading two columns
(the PyTorch reference, for one) also reads.
"""

import pathlib

from absl import flags

from ouroboros_jax import cli
from ouroboros_jax.data.annotation_formats import (
    ANNOTATION_FORMATS,
    AnnotationSource,
    convert_directory,
)
from ouroboros_jax.data.syllable_labels import describe_counts, label_counts
from ouroboros_jax.errors import report_input_errors

FLAGS = cli.flag_set()
_AUDIO_DIR = flags.DEFINE_string("audio_dir", None, "Folder of the .wav/.flac recordings the annotations describe.",
                                 flag_values=FLAGS)
_FORMAT = flags.DEFINE_string("annotation_format", None,
                              f"Format of the annotations: {', '.join(f for f in ANNOTATION_FORMATS if f != 'ours')}.",
                              flag_values=FLAGS)
_ANNOTATION_DIR = flags.DEFINE_string("annotation_dir", None, "Folder of the annotation files (for generic-seq and "
                                      "birdsong-recognition-dataset also the file itself); default --audio_dir.",
                                      flag_values=FLAGS)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Folder for the <stem>.txt files; default --audio_dir, where "
                               "training looks for them.", flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace .txt files that already exist.", flag_values=FLAGS)


@report_input_errors
def main(argv):
    cli.check_command(argv, FLAGS, {"audio_dir": "the folder of recordings",
                                    "annotation_format": "the format of the annotations"})
    audio_dir = pathlib.Path(_AUDIO_DIR.value).expanduser()
    out_dir = pathlib.Path(_OUT_DIR.value).expanduser() if _OUT_DIR.value else audio_dir
    source = AnnotationSource(_FORMAT.value, _ANNOTATION_DIR.value)
    results = convert_directory(audio_dir, source, out_dir, _OVERWRITE.value)
    counts = label_counts(labels for _, _, labels in results)
    print(f"wrote {len(results)} annotation files to {out_dir}: {sum(counts.values())} syllables"
          f"{', labels ' + describe_counts(counts) if counts else ''}")


if __name__ == "__main__":
    cli.run(main, FLAGS)
