"""Command-line flags from an options record (`pipelines.options`), and back: one definition serves a job, its
CLI and any command line written for it later (the nightly crontab line).

A field `batch_size: int = option(16, "videos per model call")` is the flag `--batch-size`, its default shown
in its help; a bool is a switch; a field without a default must be given; `positional` makes it an argument;
`repeat` a flag given once per value (a list field); a field without help is no flag. A job's parser may take
several records (its library options and its own, such as --json).
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
    return args[0] if args and typing.get_origin(hint) is not tuple else hint


def add_options(parser: argparse.ArgumentParser, cls, defaults: dict | None = None,
                required: tuple[str, ...] = ()) -> None:
    """One flag (or argument) per field of `cls`; `defaults` replaces a field's default for this command, and
    the fields named in `required` must be given to it although the record has a default."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    shared = {f.name for base in cls.__mro__[1:] if dataclasses.is_dataclass(base) for f in dataclasses.fields(base)}
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name in shared):    # the job's own options first
        meta = f.metadata
        if "help" not in meta:
            continue          # not a command-line option
        default = (defaults or {}).get(f.name, f.default)
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        must = default is dataclasses.MISSING or f.name in required
        target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"])) if "group" in meta \
            else parser
        kind = _value_type(cls, f.name)
        if kind is bool:
            target.add_argument(_flag(f.name), *meta.get("names", ()), action="store_true", help=meta["help"])
            continue
        extra = {key: meta[key] for key in ("choices", "nargs", "metavar") if key in meta}
        if meta.get("repeat"):
            extra["action"] = "append"
        parse = meta.get("parse") or (None if typing.get_origin(kind) in (tuple, list) else kind)
        if meta.get("positional"):
            optional = {} if must else {"default": default, "nargs": extra.pop("nargs", "?")}
            target.add_argument(f.name, type=parse, help=meta["help"], **extra, **optional)
            continue
        told = must or default in (None, (), []) or "(default" in meta["help"]
        target.add_argument(*meta.get("names", ()), _flag(f.name), dest=f.name, type=parse, required=must,
                            default=None if must else default,
                            help=meta["help"] + ("" if told else f" (default {default})"), **extra)


def from_args(cls, args: argparse.Namespace):
    """The options that parsed flags give."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


def to_argv(options) -> list[str]:
    """Flags that parse back into `options`: every field that is set, so nothing relies on a default; the
    switches come last."""
    values = [(f.name, getattr(options, f.name)) for f in dataclasses.fields(options)]
    text = lambda value: ",".join(value) if isinstance(value, tuple) else str(value)   # noqa: E731
    return ([word for name, value in values if value is not None and not isinstance(value, bool)
             for word in (_flag(name), text(value))]
            + [_flag(name) for name, value in values if value is True])
