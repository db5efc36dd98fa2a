"""Argument dataclasses from a form's text fields (the TUI Train screen), checked like CLI flags.

A blank field keeps the dataclass default, so a form can show only a few key settings; every
unreadable value is reported at once, in the same one-line style as `SFTArgs.__post_init__`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from tunelab.errors import TunelabError
from tunelab.field_types import field_types

T = TypeVar("T")


def args_from_text(cls: type[T], texts: Mapping[str, str]) -> T:
    """An instance of the dataclass `cls` from field name -> text; blank text = the default."""
    kinds = field_types(cls)
    values: dict[str, Any] = {}
    problems = []
    for name, raw in texts.items():
        text = raw.strip()
        if not text:
            continue
        try:
            values[name] = kinds[name].parse(text)
        except ValueError:
            problems.append(f"{name} must be {kinds[name].expected} (got {text!r})")
    if problems:
        raise TunelabError("bad training settings: " + "; ".join(problems))
    return cls(**values)
