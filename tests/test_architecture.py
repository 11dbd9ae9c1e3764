"""The layers of docs/architecture.md hold: every module is in its table once, and imports only its
own layer and those above it in the table (read from the document itself, so the two cannot drift)."""

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).parent.parent
PACKAGE = REPO / "ouroboros_jax"


def layers() -> list[tuple[str, list[str]]]:
    """(layer, module patterns) per row of the table "Modules and what each may import", in order."""
    text = (REPO / "docs" / "architecture.md").read_text()
    section = text.split("## Modules and what each may import")[1].split("\n## ")[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ")][1:]  # no header
    return [(layer.strip(), re.findall(r"`([\w.*]+)`", modules)) for layer, modules in rows]


def modules() -> dict[str, pathlib.Path]:
    """Every module of the package by dotted name below `ouroboros_jax` (a package's `__init__` as
    the package's name, unless it is empty; the top-level one as `__init__`)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            if not path.read_text().strip():
                continue  # an empty package marker holds nothing to place
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def layer_of(module: str, table) -> list[int]:
    """The rows whose patterns name `module` (`model.*` names the package and its modules)."""
    return [k for k, (_, patterns) in enumerate(table) for pattern in patterns
            if module == pattern or (pattern.endswith(".*") and (module + ".").startswith(pattern[:-1]))]


def imported(path: pathlib.Path, known) -> set[str]:
    """The modules of ours `path` imports (`from ouroboros_jax.data import X`: data, or data.X if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ouroboros_jax":
            base = node.module.removeprefix("ouroboros_jax").removeprefix(".")
            names = [f"{base}.{a.name}".lstrip(".") for a in node.names if f"{base}.{a.name}".lstrip(".") in known]
            names = names or [base]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("ouroboros_jax.") for a in node.names if a.name.startswith("ouroboros_jax.")]
        found.update(n for n in names if n)
    return found


def test_every_module_is_in_one_layer_of_the_table():
    table = layers()
    assert [name for name, _ in table] == ["base", "core", "data", "run", "shell", "CLIs"]
    misplaced = {m: [table[k][0] for k in layer_of(m, table)] for m in modules()}
    assert {m: rows for m, rows in misplaced.items() if len(rows) != 1} == {}
    named = {pattern for _, patterns in table for pattern in patterns}
    assert {p for p in named if not p.endswith(".*") and p not in modules()} == set()  # no stale names


def breaches(table, known: dict) -> list[str]:
    """Each import of a module from a layer below the importer's, as "a (layer) imports b (layer)"."""
    found = []
    for module, path in known.items():
        (own,) = layer_of(module, table)
        for other in sorted(imported(path, known)):
            (theirs,) = layer_of(other, table)
            if theirs > own:
                found.append(f"{module} ({table[own][0]}) imports {other} ({table[theirs][0]})")
    return found


def test_each_module_imports_only_its_own_layer_and_those_above():
    assert breaches(layers(), modules()) == []


def test_a_core_module_importing_the_main_job_is_a_breach(tmp_path):
    # The check is not vacuous: `objective.losses` rewritten to import the shell (and data, from the core) is caught.
    known = modules()
    losses = tmp_path / "losses.py"
    losses.write_text("from ouroboros_jax.training.run import train_and_evaluate\nimport ouroboros_jax.data.audio\n")
    assert breaches(layers(), {**known, "objective.losses": losses}) == [
        "objective.losses (core) imports data.audio (data)", "objective.losses (core) imports training.run (shell)"]


def test_only_the_train_command_imports_the_main_job():
    known = modules()
    assert sorted(m for m, path in known.items() if "training.run" in imported(path, known)) == ["train"]
