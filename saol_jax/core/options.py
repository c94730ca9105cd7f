"""Typed recipe options: `--config recipe.py:smoke,head=gap,hw=gpu8`.

A recipe declares its options as `name=Option(default, choices)`; the text
after the colon becomes typed values (bool, int, float, or str limited to
`choices`). A bare name sets a bool option to True. An unknown name, a value
of the wrong type or one outside the choices is an error that lists every
valid option with its type, choices and default.
"""

from __future__ import annotations

import dataclasses

import ml_collections

OptionValue = bool | int | float | str

_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its default, whose type is the option's type, and for a
    str option the allowed values (the default may stand outside them, to
    mean "not set")."""

    default: OptionValue
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """'str, one of a|b (default a)' and the like, for error messages."""
        kind = type(self.default).__name__
        if self.choices:
            kind += ", one of " + "|".join(self.choices)
        return f"{kind} (default {self.default!r})"

    def parse(self, name: str, text: str | None) -> OptionValue:
        """The typed value of `text`; None (a bare name) means True for a bool."""
        kind = type(self.default)
        if kind is bool:
            word = "true" if text is None else text.lower()
            if word not in _TRUE + _FALSE:
                raise ValueError(f"option {name} is a bool (true|false), got {text!r}")
            return word in _TRUE
        if text is None:
            raise ValueError(f"option {name} needs a value: {name}=<{kind.__name__}>")
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"option {name} is {kind.__name__}, got {text!r}") from None
        if self.choices and value not in self.choices:
            raise ValueError(f"{name} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


def describe_options(spec: dict[str, Option]) -> str:
    """Every option on one line: 'name: type, choices (default); ...', for one-line errors."""
    return "; ".join(f"{name}: {option.describe()}" for name, option in sorted(spec.items()))


def parse_options(arg: str | None, spec: dict[str, Option]) -> ml_collections.FrozenConfigDict:
    """'smoke,head=gap' -> {'smoke': True, 'head': 'gap', other options at their defaults}."""
    values = {name: option.default for name, option in spec.items()}
    for item in filter(None, (arg or "").split(",")):
        name, equals, text = item.partition("=")
        name = name.strip()
        if name not in spec:
            raise ValueError(f"unknown config option {name!r}; valid options are {describe_options(spec)}")
        values[name] = spec[name].parse(name, text.strip() if equals else None)
    return ml_collections.FrozenConfigDict(values)
