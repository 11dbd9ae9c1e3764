"""Every setting defined once: a field of a frozen config dataclass carries its flag's name,
default and help (`setting`).

A config class is a tree: a field whose default is itself a config is a group of settings (the
run's data, sampler, model, objective and rollout, `training.config.RunConfig`). The CLIs define
one flag per setting from this tree and build the config back from the flags
(`ouroboros_jax.cli`); docs/cli.md's tables and the flagfiles are checked against it by
tests/test_settings.py. Pure Python: the core's configs use it without importing the shell.
"""

import dataclasses
from typing import Any, Callable, NamedTuple


class Setting(NamedTuple):
    """One setting of a config tree.

    Attributes:
      flag: the flag's name (the field's, unless given).
      path: the attribute path from the root config, e.g. ("model", "scan_impl").
      default: the field's default (dataclasses.MISSING: the flag is required).
      help: the flag's help text.
      kind: bool, int, float, str or list (a repeatable string flag).
      choices: the values an enum flag allows, or None.
      text: field value -> the flag's text (tuple fields given as one string), or None.
      parse: the flag's value -> the field's value, or None.
    """

    flag: str
    path: tuple
    default: Any
    help: str
    kind: type
    choices: tuple | None
    text: Callable | None
    parse: Callable | None

    @property
    def flag_default(self):
        """The default as the flag holds it (None for a required flag)."""
        if self.default is dataclasses.MISSING:
            return None
        return self.text(self.default) if self.text else self.default


def setting(default=dataclasses.MISSING, help: str = "", *, flag: str | None = None, kind: type | None = None,
            choices: tuple | None = None, text: Callable | None = None, parse: Callable | None = None):
    """A dataclass field that is also a flag (`Setting` explains the arguments).

    `kind` defaults to the type of `default` (give it when the default is None or missing).
    """
    metadata = {"setting": dict(flag=flag, help=help, kind=kind, choices=choices, text=text, parse=parse)}
    return dataclasses.field(default=default, metadata=metadata)


def _is_group(field: dataclasses.Field) -> bool:
    return dataclasses.is_dataclass(field.default)


def _flag(field: dataclasses.Field) -> str:
    """The flag of a setting's field: the name `setting` was given, else the field's."""
    return field.metadata["setting"]["flag"] or field.name


def settings_of(config_class, path: tuple = ()) -> list[Setting]:
    """Every setting of `config_class` and its groups, in field order."""
    found = []
    for field in dataclasses.fields(config_class):
        if _is_group(field):
            found += settings_of(type(field.default), path + (field.name,))
        elif "setting" in field.metadata:
            m = field.metadata["setting"]
            kind = m["kind"] or type(field.default)
            found.append(Setting(_flag(field), path + (field.name,), field.default, m["help"], kind, m["choices"],
                                 m["text"], m["parse"]))
    return found


def build(config_class, values: dict, parse: bool = True):
    """A config of `config_class` from `values`, flag name -> value; a setting not in `values`
    keeps its default, so do the fields that are not settings.

    `parse`: the values are the flags' (each setting's `parse` converts them); otherwise they are
    the fields' own (as `record` stores them: lists stand for tuples).
    """
    fields = {}
    for field in dataclasses.fields(config_class):
        if _is_group(field):
            fields[field.name] = build(type(field.default), values, parse)
            continue
        if "setting" not in field.metadata:
            continue
        if _flag(field) in values:
            value, parse_flag = values[_flag(field)], field.metadata["setting"]["parse"]
            if not parse:
                value = _tuples(value)
            elif parse_flag:
                value = parse_flag(value)
            fields[field.name] = value
    return config_class(**fields)


def flat(config) -> dict:
    """flag name -> the config's value of every setting (`build(type(config), flat(config), parse=False)`
    is `config`, but for the fields that are not settings)."""
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if _is_group(field):
            values.update(flat(value))
        elif "setting" in field.metadata:
            values[_flag(field)] = value
    return values


def record(config) -> dict:
    """The config as JSON-able nested dicts, every field (settings or not) under its own name."""
    return dataclasses.asdict(config)


def from_record(config_class, fields: dict):
    """The config that `record` made `fields` of; a field missing from it (a setting added since)
    keeps its default."""
    kwargs = {}
    for field in dataclasses.fields(config_class):
        if field.name not in fields:
            continue
        value = fields[field.name]
        kwargs[field.name] = from_record(type(field.default), value) if _is_group(field) else _tuples(value)
    return config_class(**kwargs)


def _tuples(value):
    """JSON's lists back to the tuples the configs hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
