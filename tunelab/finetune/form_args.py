"""Argument dataclasses from a form's text fields (the TUI Train screen), checked like CLI flags.

A blank field keeps the dataclass default, so a form can show only a few key settings; every
unreadable value is reported at once, in the same one-line style as `SFTArgs.__post_init__`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from tunelab.errors import TunelabError

T = TypeVar("T")

READERS = {"int": int, "int | None": int, "float": float, "str": str}
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def read_value(kind: str, text: str) -> Any:
    """`text` as a value of the dataclass field type `kind`; ValueError when it is not one."""
    if kind in READERS:
        return READERS[kind](text)
    if kind == "bool":
        if text.lower() not in TRUE | FALSE:
            raise ValueError(text)
        return text.lower() in TRUE
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    raise TypeError(f"no reader for field type {kind}")


def args_from_text(cls: type[T], texts: Mapping[str, str]) -> T:
    """An instance of the dataclass `cls` from field name -> text; blank text = the default."""
    kinds = {f.name: str(f.type) for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    problems = []
    for name, raw in texts.items():
        text = raw.strip()
        if not text:
            continue
        try:
            values[name] = read_value(kinds[name], text)
        except ValueError:
            expected = {"int": "a whole number", "int | None": "a whole number", "float": "a number", "bool": "yes or no"}
            problems.append(f"{name} must be {expected.get(kinds[name], 'a value')} (got {text!r})")
    if problems:
        raise TunelabError("bad training settings: " + "; ".join(problems))
    return cls(**values)
