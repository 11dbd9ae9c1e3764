"""Every command of ouroboros_jax behind one entry point.

    python -m ouroboros_jax train --flagfile=experiments/demo.flags
    ouroboros-jax train --flagfile=experiments/demo.flags          (the console script: the same)
    ouroboros-jax synthesize --help                                 (a command's flags)

`python -m ouroboros_jax.<command>` works as well; docs/cli.md describes each command.
"""

import importlib
import sys

from ouroboros_jax import cli

COMMANDS = {
    "train": "train (or resume) a run: seeds, culling, selection, outputs",
    "monitor": "watch a training run: one status line per poll",
    "plot": "figures of a run: specgram, losses, drives",
    "synthesize": "a trained run sings one syllable of any recording",
    "evaluate": "score a trained run on cold-start vocalisations of any recordings",
    "report": "a finished run's report.html again: verdict, vocalisations to hear, members, curves",
    "segment": "write syllable annotations for every recording of a folder, from amplitude",
    "convert_annotations": "another tool's annotations as our <stem>.txt files",
    "convert": "a model trained with the PyTorch reference, as a run of ours",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "usage: ouroboros-jax <command> [--flags]\n\ncommands:\n" + "\n".join(
        f"  {name:<{width}}  {what}" for name, what in COMMANDS.items())


def main(argv: list[str] | None = None) -> None:
    """Runs `argv[1]`'s command with the rest of `argv` as its flags."""
    argv = sys.argv if argv is None else argv
    command = argv[1] if len(argv) > 1 else None
    if command in ("-h", "--help", "help"):
        print(usage())
        return
    if command not in COMMANDS:
        said = "no command" if command is None else f"unknown command {command!r}"
        print(f"{usage()}\n\nerror: {said}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"ouroboros_jax.{command}")
    sys.argv = [f"ouroboros-jax {command}", *argv[2:]]  # what absl parses, and --help's program name
    cli.run(module.main, module.FLAGS)


if __name__ == "__main__":
    main()
