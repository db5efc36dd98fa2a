"""Flags shared by the commands that generate text, built from `SamplerParams` so they can't drift."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any

import click

from tunelab.engine.sampling import SamplerParams


def sampler_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add --temperature, --top-p, ... (one per SamplerParams field, its docstring-less help from the default)."""
    for f in reversed(fields(SamplerParams)):
        name = "--" + f.name.replace("_", "-")
        if f.name == "stop":
            func = click.option(name, multiple=True, help="Stop string (repeatable).")(func)
            continue
        default = f.default if f.default is not MISSING else None
        kind = {"float": float, "int": int}[str(f.type)]
        func = click.option(name, type=kind, default=None, help=f"(default {default})")(func)
    return func


def sampler_from(kwargs: dict[str, Any], base: dict[str, Any] | None = None) -> SamplerParams:
    """Pop the sampler flags out of a command's kwargs; unset flags keep `base` or the defaults."""
    values = dict(base or {})
    for f in fields(SamplerParams):
        value = kwargs.pop(f.name, None)
        if value not in (None, ()):
            values[f.name] = list(value) if f.name == "stop" else value
    return SamplerParams.from_dict(values)
