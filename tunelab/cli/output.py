"""`--json` and `-n/--limit` for every list and show command, in one place.

Lists print one JSON array and shows one JSON object, both with the record's own field names
(the store dataclasses), so scripts and `jq` see the same names whichever command they read;
the README lists them. Text output stays the default for people.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

T = TypeVar("T")


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--json`: machine-readable output instead of the text table."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (field names: README, 'JSON output').")(func)


def limit_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`-n/--limit N`: only the first N rows of a list (lists are newest first)."""
    return click.option("-n", "--limit", type=click.IntRange(min=0), default=None, help="Show at most N (newest first; 0 or unset = all).")(
        func
    )


def limited(items: Sequence[T], limit: int | None) -> list[T]:
    return list(items[:limit] if limit else items)


def jsonable(value: Any) -> Any:
    """Dataclasses to dicts, paths to strings, tuples to lists: what `json.dumps` can write."""
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def echo_json(value: Any) -> None:
    click.echo(json.dumps(jsonable(value), indent=2, ensure_ascii=False))
