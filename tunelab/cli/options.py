"""Flags shared by the commands that generate text, built from `SamplerParams` so they can't drift."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

from tunelab.engine.sampling import SamplerParams
from tunelab.field_types import field_types


def sampler_options(defaults: SamplerParams, notes: dict[str, str] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add --temperature, --top-p, ... (one per SamplerParams field), the help showing `defaults`:
    the command's own (chat samples, compare is greedy); `notes` describes a default in words."""
    kinds = field_types(SamplerParams)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for f in reversed(fields(SamplerParams)):
            name = "--" + f.name.replace("_", "-")
            if f.name == "stop":
                func = click.option(name, multiple=True, help="Stop string (repeatable).")(func)
                continue
            default = getattr(defaults, f.name)
            shown = (notes or {}).get(f.name, "a new random seed per reply" if f.name == "seed" and default is None else default)
            func = click.option(name, type=kinds[f.name].base, default=None, help=f"(default {shown})")(func)
        return func

    return decorate


def sampler_from(kwargs: dict[str, Any], base: dict[str, Any] | None = None) -> SamplerParams:
    """Pop the sampler flags out of a command's kwargs; unset flags keep `base` or the defaults."""
    values = dict(base or {})
    for f in fields(SamplerParams):
        value = kwargs.pop(f.name, None)
        if value not in (None, ()):
            values[f.name] = list(value) if f.name == "stop" else value
    return SamplerParams.from_dict(values)
