"""How every command-line entry point defines, parses and reports its flags.

Each CLI module holds its own `flags.FlagValues` (`FLAGS = flag_set()`), defines its flags on it
at import, and runs with `run(main, FLAGS)`; so the CLIs can be imported together (tests,
notebooks) though several share flag names (--out_dir, --seed, --run_dir). A config's settings
(`ouroboros_jax.settings`) become flags with `define_settings` and come back with `from_flags`.
A bad flag is one `error:` line and exit status 2, as every `InputError`.
"""

import dataclasses
import sys

from absl import app, flags

from ouroboros_jax.errors import InputError
from ouroboros_jax.settings import build, settings_of

_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull")
_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string, list: flags.DEFINE_multi_string}


def flag_set() -> flags.FlagValues:
    """A CLI's own flags (not absl's global `FLAGS`, which every CLI would share)."""
    return flags.FlagValues()


def define_settings(config_class, flag_values: flags.FlagValues) -> None:
    """One flag per setting of `config_class` (and its groups): its name, default and help."""
    for s in settings_of(config_class):
        required = s.default is dataclasses.MISSING
        if s.choices:
            flags.DEFINE_enum(s.flag, s.flag_default, s.choices, s.help, flag_values=flag_values)
        else:
            _DEFINE[s.kind](s.flag, s.flag_default, s.help, flag_values=flag_values)
        if required:
            flag_values[s.flag].help += " (required)"


def from_flags(config_class, flag_values: flags.FlagValues):
    """The config of `config_class` that the parsed flags give.

    Raises:
      InputError: a required flag is missing, or a value is not one the setting allows.
    """
    values = {}
    for s in settings_of(config_class):
        values[s.flag] = flag_values[s.flag].value
        if s.default is dataclasses.MISSING and values[s.flag] in (None, ""):
            raise InputError(f"--{s.flag} is required: {s.help[0].lower()}{s.help[1:].rstrip('.')}")
    return build(config_class, values)


def check_command(argv: list[str], flag_values: flags.FlagValues, required: dict | None = None) -> None:
    """Refuses positional arguments, and the `required` flags (name -> what it is) left unset.

    Raises:
      InputError: naming the argument or the flag.
    """
    if len(argv) > 1:
        raise InputError(f"unexpected arguments {argv[1:]}; every setting is a --flag (see --help)")
    for name, what in (required or {}).items():
        if flag_values[name].value is None:
            raise InputError(f"--{name} is required: {what}")


def parse(flag_values: flags.FlagValues, argv: list[str], doc: str | None = None) -> list[str]:
    """Parses `argv` into `flag_values`; --help prints the command's `doc` (default: the `__main__`
    module's) and its flags, and exits."""
    if any(arg in _HELP for arg in argv[1:]):
        doc = sys.modules["__main__"].__doc__ if doc is None else doc
        print((doc or "").strip() + "\n\nflags:\n" + flag_values.get_help())
        sys.exit(0)
    try:
        remaining = flag_values(argv)
    except flags.Error as e:
        print(f"error: {' '.join(str(e).split()).rstrip('.')}; see --help for every flag", file=sys.stderr)
        sys.exit(InputError.exit_status)
    flags.FLAGS.mark_as_parsed()  # absl's own flags (logging, app) keep their defaults
    return remaining


def run(main, flag_values: flags.FlagValues) -> None:
    """`absl.app.run(main)` with the CLI's own flags; --help shows the doc of `main`'s module (run as
    `python -m ouroboros_jax.<command>` or through `python -m ouroboros_jax <command>`)."""
    doc = sys.modules[main.__module__].__doc__
    app.run(main, flags_parser=lambda argv: parse(flag_values, argv, doc))
