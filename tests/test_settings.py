"""Every setting is defined once (issue 17): the flags, the flagfiles and docs/cli.md agree with
the config classes, and the config survives its records."""

import dataclasses
import importlib
import json
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from ouroboros_jax import cli, settings
from ouroboros_jax.data import SegmenterConfig
from ouroboros_jax.errors import InputError
from ouroboros_jax.training.config import RunConfig
from ouroboros_jax.training.records import check_resumable

REPO = pathlib.Path(__file__).parent.parent
PROCESS_FLAGS = {"compilation_cache_dir", "coordinator_address", "num_processes", "process_id"}
GROUP_SECTIONS = {"data": "Data", "sampler": "Sampler", "model": "Model", "objective": "Objective",
                  "rollout": "Rollout"}
CLIS = ("train", "segment", "synthesize", "evaluate", "report", "plot", "monitor", "convert", "convert_annotations")


@pytest.fixture(scope="module")
def train_flags():
    from ouroboros_jax import train

    return train.FLAGS


def parsed(config_class, *argv) -> flags.FlagValues:
    """Fresh flags of `config_class`'s settings (as the CLIs define theirs), parsed from `argv`."""
    fresh = cli.flag_set()
    cli.define_settings(config_class, fresh)
    fresh(["prog", *argv])
    return fresh


def test_every_setting_is_a_training_flag_with_its_default_and_help(train_flags):
    found = settings.settings_of(RunConfig)
    assert len({s.flag for s in found}) == len(found)  # one flag per setting
    assert set(train_flags) == {s.flag for s in found} | PROCESS_FLAGS
    for s in found:
        flag = train_flags[s.flag]
        assert flag.default == s.flag_default and s.help in flag.help, s.flag


def test_the_flags_defaults_build_the_config_s_defaults():
    config = cli.from_flags(RunConfig, parsed(RunConfig, "--data_dir=somewhere"))
    assert config == RunConfig.of(data_dir="somewhere")
    assert config.objective.spec_configs == ((256, 64), (512, 128), (1024, 256))  # parsed from the flag's text


def test_flag_texts_become_the_fields_values():
    config = cli.from_flags(RunConfig, parsed(
        RunConfig, "--data_dir=d", "--ratio=1,1,0.5", "--spec_configs=64,16;128,32", "--syllables=a,b",
        "--sweep=lr=1e-3,3e-3", "--sweep=lam_tf=0.5", "--encoder_scan=sequential", "--rollout_backend=deer",
        "--nokeep_const", "--channel=1"))
    assert config.sampler.ratio == (1.0, 1.0, 0.5)
    assert config.objective.spec_configs == ((64, 16), (128, 32))
    assert config.data.syllables == ("a", "b") and config.data.channel == 1
    assert config.sweep == (("lr", (1e-3, 3e-3)), ("lam_tf", (0.5,)))
    assert config.model.scan_impl == "sequential" and not config.model.keep_const
    assert config.rollout.backend == "deer"
    # The flat view by flag name holds the same values.
    flat = settings.flat(config)
    assert flat["ratio"] == (1.0, 1.0, 0.5) and flat["encoder_scan"] == "sequential" and flat["lam_tf"] == 1.0


def test_a_missing_required_flag_names_itself():
    with pytest.raises(InputError, match=r"^--data_dir is required: directory of <stem>\.wav"):
        cli.from_flags(RunConfig, parsed(RunConfig))


def test_a_config_survives_its_record():
    config = RunConfig.of(data_dir="d", ratio=(1.0, 1.0, 0.5), sweep=(("lr", (1e-3, 3e-3)),), lam_tf=0.5,
                          rollout_backend="deer", syllables=("a",), n_epochs=7, out_dir="o")
    record = json.loads(json.dumps(config.fingerprint()))
    assert RunConfig.from_record(record, "o", 7) == config


def test_a_record_of_the_flat_layout_reads_as_the_same_config(tmp_path):
    """Runs made before the settings were grouped keep their records: run.json and checkpoints
    hold the flat layout, which reads back as the config with those values, and resumes."""
    config = RunConfig.of(data_dir="d", context_len=0.02, seed=7, lam_tf=0.5, encoder_scan="sequential",
                          bound_x=0.3, sweep=(("lr", (1e-3, 3e-3)),), h_max=1024)
    new = config.fingerprint()
    old = {k: v for k, v in new.items() if k not in ("data", "sampler", "model", "objective", "rollout")}
    old.update(new["objective"], **{k: v for k, v in new["rollout"].items() if k not in ("backend", "step_size",
                                                                                          "gradient")})
    old["rollout_backend"] = new["rollout"]["backend"]
    old["loss"] = [old.pop(k) for k in ("lam_spec", "lam_tf", "lam_env", "lam_env_log")]
    old["data"] = {**new["data"], **new["sampler"], "seed": old.pop("seed")}
    old["model"] = dict(new["model"])
    assert RunConfig.from_record(old, config.out_dir, config.n_epochs) == config
    check_resumable(tmp_path, config, {"config": old, "n_epochs": config.n_epochs}, 1)  # no error


def cli_doc_tables() -> dict:
    """docs/cli.md's training flag tables: section title -> {flag: documented default}."""
    doc = (REPO / "docs" / "cli.md").read_text()
    section = doc[doc.index("## `python -m ouroboros_jax.train`"):doc.index("## Outputs in `--out_dir`")]
    tables = {}
    for title, body in re.findall(r"^### (.+?)\n(.*?)(?=^### |\Z)", section, re.M | re.S):
        rows = re.findall(r"^\| `--(\w+)`[^|]*\| ([^|]*) \|", body, re.M)
        if rows:
            tables[title.split(" (")[0]] = {name: default.strip().strip("`") for name, default in rows}
    return tables


def test_docs_cli_lists_every_setting_in_its_group_with_its_default(train_flags):
    from ouroboros_jax.training.compilation import default_cache_dir

    tables = cli_doc_tables()
    found = settings.settings_of(RunConfig)
    for group, title in GROUP_SECTIONS.items():
        assert set(tables[title]) == {s.flag for s in found if s.path[0] == group}, title
    run_flags = {s.flag for s in found if len(s.path) == 1} | PROCESS_FLAGS
    others = set().union(*(set(t) for title, t in tables.items() if title not in GROUP_SECTIONS.values()))
    assert others == run_flags
    words = {"required": None, "none": None, "on": True, "off": False, "all": "", "beside the recordings": None,
             "the user's cache folder": default_cache_dir(), "no sweep": []}

    def same(doc_value, flag_value):
        doc_value = words.get(doc_value, doc_value)
        if isinstance(flag_value, (int, float)) and not isinstance(flag_value, bool):
            return float(doc_value) == flag_value
        return doc_value == flag_value

    documented = {name: value for table in tables.values() for name, value in table.items()}
    assert [name for name, value in documented.items() if not same(value, train_flags[name].default)] == []


@pytest.mark.parametrize("flagfile", sorted((REPO / "experiments").glob("*.flags")), ids=lambda p: p.name)
def test_every_flagfile_builds_a_config(flagfile):
    """Every flag of a flagfile is a setting, and its values are ones the settings allow."""
    names = [re.match(r"--(\w+)", line).group(1) for line in flagfile.read_text().splitlines()
             if line.startswith("--")]
    known = {s.flag for s in settings.settings_of(RunConfig)} | {"flagfile"}
    assert [n for n in names if n not in known and not (n.startswith("no") and n[2:] in known)] == []
    config = cli.from_flags(RunConfig, parsed(RunConfig, f"--flagfile={flagfile}", "--data_dir=somewhere"))
    assert config.data.data_dir == "somewhere"


def test_the_reference_recipe_is_the_defaults_but_its_culling():
    """experiments/blk445.flags spells out the reference's recipe: every value it sets is
    the setting's default, but for culling 0.4 of the epochs and its output folder."""
    config = cli.from_flags(RunConfig, parsed(RunConfig, "--flagfile=experiments/blk445.flags",
                                              "--data_dir=somewhere"))
    assert config == RunConfig.of(data_dir="somewhere", cull_frac=0.4, out_dir="runs/blk445")


def test_the_segmenter_s_flags_are_its_settings():
    from ouroboros_jax import segment

    for s in settings.settings_of(SegmenterConfig):
        assert segment.FLAGS[s.flag].default == s.default and segment.FLAGS[s.flag].help == s.help
    config = cli.from_flags(SegmenterConfig, parsed(SegmenterConfig, "--onset_db=20"))
    assert config == SegmenterConfig(onset_db=20.0)


def test_the_clis_import_together_each_with_its_own_flags():
    """One process imports every CLI (they share names like --out_dir and --seed) and parses each."""
    script = "; ".join([f"from ouroboros_jax import {name}" for name in CLIS] + [
        "import json",
        "print(json.dumps({n: sorted(m.FLAGS) for n, m in "
        f"{{{', '.join(f'{n!r}: {n}' for n in CLIS)}}}.items()}}))",
    ])
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names = json.loads(result.stdout)
    assert "out_dir" in names["train"] and "out_dir" in names["segment"] and "seed" in names["plot"]
    assert "sample_rate" not in names["train"] and "run_dir" not in names["train"]


@pytest.mark.parametrize("cli_name", CLIS)
def test_every_cli_answers_help_and_bad_flags_alike(cli_name, capsys):
    flag_values = importlib.import_module(f"ouroboros_jax.{cli_name}").FLAGS
    with pytest.raises(SystemExit) as exit_:
        cli.parse(flag_values, ["prog", "--help"])
    assert exit_.value.code == 0 and "flags:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.parse(flag_values, ["prog", "--no_such_flag=1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: Unknown command line flag 'no_such_flag'; see --help for "
                                               "every flag")


def test_a_setting_knows_its_field():
    by_flag = {s.flag: s for s in settings.settings_of(RunConfig)}
    assert by_flag["encoder_scan"].path == ("model", "scan_impl")
    assert by_flag["rollout_backend"].path == ("rollout", "backend")
    assert by_flag["lr"].path == ("lr",) and by_flag["ratio"].flag_default == "0.4,0.4,0.2"
    assert by_flag["data_dir"].default is dataclasses.MISSING


@pytest.mark.parametrize("settings_, message", [
    (dict(lr_schedule="step"), "--lr_schedule=step: must be one of"),
    (dict(matmul_precision="low"), "--matmul_precision=low: must be one of"),
    (dict(sweep=(("momentum", (0.9,)),)), "only lr, grad_clip"),
])
def test_a_config_made_without_the_flags_is_checked_as_they_would_be(settings_, message):
    """The enum flags guard these on the command line; a config made in code is checked too."""
    with pytest.raises(InputError, match=re.escape(message)):
        RunConfig.of(data_dir="d", **settings_)
