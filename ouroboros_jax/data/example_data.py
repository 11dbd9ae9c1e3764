"""The bundled example data: real Bengalese finch song, segmented and typed by our own tools.

The files live in `ouroboros_jax/data/example/` and install with the package; NOTICE there
credits their authors (Koumura & Okanoya 2016, CC BY 4.0) and lists the syllable types.
`scripts/make_example_data.py` regenerates them. On the command line, `--data_dir=@example`
names this folder.
"""

import pathlib

# The `--data_dir` value that names the bundled data, usable in flagfiles.
EXAMPLE_DATA = "@example"
# The bundle's labels are `segment --cluster=EXAMPLE_CLUSTER --seed=EXAMPLE_CLUSTER_SEED` of its recordings:
# the source (Koumura & Okanoya's Annotation.xml) is not in the wheel the recordings come from.
EXAMPLE_CLUSTER = "auto"
EXAMPLE_CLUSTER_SEED = 0


def example_data_dir() -> pathlib.Path:
    """The folder of the bundled example recordings and their annotations."""
    return pathlib.Path(__file__).resolve().parent / "example"


def resolve_data_dir(data_dir: str | pathlib.Path) -> pathlib.Path:
    """`data_dir` as a path; the special value "@example" is the bundled example data."""
    if str(data_dir) == EXAMPLE_DATA:
        return example_data_dir()
    return pathlib.Path(data_dir).expanduser()
