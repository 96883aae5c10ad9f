"""A setting's one home: a dataclass field that carries its default, help text and allowed values.

    epochs: float = setting(3.0, "training budget in epochs (fractions allowed)", POSITIVE)

The config dataclasses (TrainConfig, RunOptions, CompressConfig, KDConfig, QuantSpec, AugmentConfig) declare
their fields this way and call `check_settings(self)` in `__post_init__`, so a config object with a value
outside its range cannot exist. `add_settings` turns the same fields into argparse arguments (flag, type,
default, choices, help) and `build_settings` turns the parsed arguments back into the config objects; argparse
holds no default or allowed value of its own. Stdlib only: xtc.study and the workflow import it cheaply.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field


class SettingError(ValueError):
    """A setting outside its allowed values; the message names the flag and what it accepts."""

    def __init__(self, message: str, flag: str | None = None):
        super().__init__(message)
        self.flag = flag


@dataclass(frozen=True)
class Allowed:
    """The values a numeric or enumerated setting accepts: a set of choices, or an interval of finite
    numbers (each bound open or closed, or absent). An int field also needs a whole number."""
    choices: tuple | None = None
    low: float | None = None
    low_open: bool = False
    high: float | None = None
    high_open: bool = False

    def accepts(self, value) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """The allowed values as the end of 'must be ...'."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low:g}, "
                    f"{self.high:g}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a number"


POSITIVE = Allowed(low=0, low_open=True)
NON_NEGATIVE = Allowed(low=0)
UNIT_INTERVAL = Allowed(low=0, high=1)  # a probability
OPEN_UNIT_INTERVAL = Allowed(low=0, low_open=True, high=1, high_open=True)  # a share strictly between


def one_of(*choices) -> Allowed:
    return Allowed(choices=tuple(choices))


def setting(default, help: str, allowed: Allowed | None = None, *, flag: str | None = None,
            negate: bool = False):
    """A dataclass field with everything the CLI and validation need. `flag` overrides the flag name
    (default: --field-name); `negate` makes a True-by-default bool a `--flag` that turns it off. Tuples
    (of strings) are comma-separated on the command line; `allowed` then applies to each element."""
    return field(default=default, metadata={"help": help, "allowed": allowed, "flag": flag, "negate": negate})


def flag_of(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def check_settings(obj) -> None:
    """Raise SettingError for the first field of `obj` outside its allowed values (None is always allowed
    for an optional field: it means 'not given')."""
    for f in dataclasses.fields(obj):
        allowed, value = f.metadata.get("allowed"), getattr(obj, f.name)
        if allowed is None or value is None:
            continue
        kind = _kind(type(obj), f)
        where = f"({type(obj).__name__}.{f.name})"
        items = value if kind is tuple else (value,)
        if kind is tuple and not items:
            raise SettingError(f"{flag_of(f)} is empty; give a comma-separated list of {allowed.describe()} {where}",
                               flag_of(f))
        for v in items:
            whole = kind is not int or (isinstance(v, int) and not isinstance(v, bool))
            if whole and allowed.accepts(v):
                continue
            if kind is tuple:
                raise SettingError(f"{flag_of(f)} must list only {allowed.describe().removeprefix('one of ')}, "
                                   f"got {v!r} {where}", flag_of(f))
            what = allowed.describe()
            if allowed.choices is None:
                finite = "" if allowed.low is not None and allowed.high is not None else " and finite"
                what = f"an integer {what}" if kind is int else f"{what}{finite}"
            raise SettingError(f"{flag_of(f)} must be {what}, got {_show(value)} {where}", flag_of(f))


def _kind(cls, f: dataclasses.Field):
    """The base type of a field's annotation: int, float, str, bool or tuple (Optional stripped)."""
    hint = typing.get_type_hints(cls)[f.name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(","))


def add_settings(parser: argparse.ArgumentParser, attr: str, cls, title: str | None = None,
                 only: tuple[str, ...] | None = None, flags: dict[str, str] | None = None,
                 helps: dict[str, str] | None = None) -> None:
    """Add one argument per field of dataclass `cls` (or of the fields in `only`) to `parser`, in an argument
    group `title`; fields an earlier call showed for the same `attr` are skipped, so a last call without `only`
    shows the rest. After parsing, `build_settings(args)` sets `args.<attr>` to the `cls` object. `flags` and
    `helps` rename a field's flag or reword its help for this command only (its default and allowed values
    stay the dataclass's)."""
    group = parser.add_argument_group(title) if title else parser
    earlier = parser.get_default("settings_") or []
    shown = {name for a, _, b in earlier if a == attr for name in b}  # by an earlier call for the same object
    bound = {}
    for f in dataclasses.fields(cls):
        if (only is not None and f.name not in only) or f.name in shown:
            continue
        flag = (flags or {}).get(f.name) or flag_of(f)
        dest = f"{attr}.{f.name}"
        text = (helps or {}).get(f.name) or f.metadata.get("help", "")
        kind, allowed = _kind(cls, f), f.metadata.get("allowed")
        if kind is bool:
            action = "store_false" if f.metadata.get("negate") else "store_true"
            group.add_argument(flag, dest=dest, action=action, default=f.default, help=text)
        else:
            kwargs = {"type": _comma_list if kind is tuple else kind}
            if allowed is not None and allowed.choices is not None and kind is not tuple:
                kwargs["choices"] = allowed.choices
            if f.default is not None:
                text += f" (default: {_show(f.default)})"
            if "choices" not in kwargs:
                kwargs["metavar"] = f.name.upper()
            group.add_argument(flag, dest=dest, default=f.default, help=text, **kwargs)
        bound[f.name] = (dest, flag)
    parser.set_defaults(settings_=[*earlier, (attr, cls, bound)])


def build_settings(args: argparse.Namespace) -> argparse.Namespace:
    """Build the config objects `add_settings` registered, validating every value once; the error names the
    flag as this command spells it."""
    groups: dict[str, tuple[type, dict]] = {}  # one object per attr, whatever groups its flags were shown in
    for attr, cls, bound in getattr(args, "settings_", None) or []:
        groups.setdefault(attr, (cls, {}))[1].update(bound)
    for attr, (cls, bound) in groups.items():
        try:
            obj = cls(**{name: getattr(args, dest) for name, (dest, _) in bound.items()})
        except SettingError as exc:
            spelled = {flag_of(f): bound[f.name][1] for f in dataclasses.fields(cls) if f.name in bound}
            if exc.flag in spelled and spelled[exc.flag] != exc.flag:  # this command spells the flag otherwise
                raise SettingError(str(exc).replace(exc.flag, spelled[exc.flag], 1), spelled[exc.flag]) from None
            raise
        setattr(args, attr, obj)
    return args


def json_schema(cls, name: str) -> dict:
    """The JSON-schema of field `name` of `cls` (type, default, enum or bounds), for checking the workflow's
    config schema against the dataclass: the two must not drift apart."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind, allowed = _kind(cls, f), f.metadata.get("allowed")
    json_type = {int: "integer", float: "number", str: "string", bool: "boolean", tuple: "array"}[kind]
    out: dict = {"type": [json_type, "null"] if f.default is None else json_type,
                 "default": list(f.default) if isinstance(f.default, tuple) else f.default}
    if allowed is not None and allowed.choices is not None:
        out["enum"] = list(allowed.choices)
    elif allowed is not None:
        if allowed.low is not None:
            out["exclusiveMinimum" if allowed.low_open else "minimum"] = allowed.low
        if allowed.high is not None:
            out["exclusiveMaximum" if allowed.high_open else "maximum"] = allowed.high
    return out
