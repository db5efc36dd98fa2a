"""What type a dataclass field holds, and how to read one typed as text.

Settings dataclasses (`SamplerParams`, `SFTArgs`, `PreferenceArgs`) become CLI flags, TUI form
fields and config values. All three read a field's type from here (resolved with
`typing.get_type_hints`, not by matching the annotation's spelling), so `int | None`,
`Optional[int]` and `int` can't end up handled by one reader and missed by another.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from typing import Any

TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
EXPECTED = {int: "a whole number", float: "a number", bool: "yes or no", str: "text", tuple: "a comma-separated list"}


@dataclass(frozen=True)
class FieldType:
    """A field's value type without `None`; `optional` when `None` is allowed too."""

    base: type
    optional: bool = False

    @property
    def expected(self) -> str:
        """How to describe a good value in an error message."""
        return EXPECTED.get(self.base, "a value")

    def parse(self, text: str) -> Any:
        """`text` as a value of this type (blank = None for an optional field); ValueError if it is not one."""
        text = text.strip()
        if not text and self.optional:
            return None
        if self.base is bool:
            if text.lower() not in TRUE | FALSE:
                raise ValueError(text)
            return text.lower() in TRUE
        if self.base is tuple:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return self.base(text)


def field_types(cls: type) -> dict[str, FieldType]:
    """Each field of the dataclass `cls` by name, with its resolved type."""
    hints = typing.get_type_hints(cls)
    return {f.name: _field_type(hints[f.name]) for f in fields(cls)}


def _field_type(hint: Any) -> FieldType:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported field type {hint}")
        return FieldType(_field_type(args[0]).base, optional=True)
    if origin is not None:  # tuple[str, ...], list[str]
        return FieldType(origin)
    return FieldType(hint)
