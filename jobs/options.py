"""Command-line flags from an options dataclass, and back: one definition serves a job, its CLI and any
command line written for it later (the nightly crontab line).

A field `batch_size: int = field(default=16, metadata={"help": ...})` is the flag `--batch-size`; a bool is a
switch; a field whose default is None and that the caller names in `required` must be given.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(cls, name: str):
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_options(parser: argparse.ArgumentParser, cls, defaults: dict | None = None,
                required: tuple[str, ...] = ()) -> None:
    """One flag per field of `cls`; `defaults` replaces a field's default for this command."""
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        default = defaults.get(f.name, f.default)
        help_text = f.metadata.get("help", "")
        if _value_type(cls, f.name) is bool:
            parser.add_argument(_flag(f.name), action="store_true", help=help_text)
            continue
        extra = {"choices": f.metadata["choices"]} if "choices" in f.metadata else {}
        shown = f" (default {default})" if default is not None and "(default" not in help_text else ""
        parser.add_argument(_flag(f.name), type=_value_type(cls, f.name), default=default,
                            required=f.name in required, help=help_text + shown, **extra)


def from_args(cls, args: argparse.Namespace):
    """The options that parsed flags give."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def to_argv(options) -> list[str]:
    """Flags that parse back into `options`: every field that is set, so nothing relies on a default; the
    switches come last."""
    values = [(f.name, getattr(options, f.name)) for f in dataclasses.fields(options)]
    return ([word for name, value in values if value is not None and not isinstance(value, bool)
             for word in (_flag(name), str(value))]
            + [_flag(name) for name, value in values if value is True])
