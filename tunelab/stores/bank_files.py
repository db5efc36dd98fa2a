"""Read example files (JSONL or CSV) into input/output rows, reporting bad lines by number.

Users bring files in whatever layout their last tool wrote, so the common field names are
recognised (`input`/`output`, `prompt`/`completion`, `question`/`answer`, `text`/`label`,
alpaca's `instruction`+`input`, chat `messages`); other names are given with
`--input-field/--output-field`. Reading never writes anything: the caller decides whether
skipped lines abort the import (`strict`) or are reported.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError

FIELD_PAIRS = (("instruction", "output"), ("input", "output"), ("prompt", "completion"), ("question", "answer"), ("text", "label"))
"""Recognised (input, output) field names, tried in this order (alpaca's instruction before its input)."""


@dataclass(frozen=True)
class ExampleRow:
    input: str
    output: str
    line: int
    """Line number in the file (CSV: the line the record ends on)."""


@dataclass
class ParsedFile:
    rows: list[ExampleRow] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason) of every line that was not read."""
    system: str = ""
    """A system message found in chat `messages` rows (the first one), offered as the bank's instruction."""

    def skipped_summary(self, limit: int = 3) -> str:
        shown = "; ".join(f"line {line}: {why}" for line, why in self.skipped[:limit])
        more = f"; and {len(self.skipped) - limit} more" if len(self.skipped) > limit else ""
        return shown + more


class FieldMapping:
    """Turns one record (a dict) into (input, output), or says why it can't."""

    def __init__(self, input_field: str | None = None, output_field: str | None = None) -> None:
        self.input_field = input_field
        self.output_field = output_field

    def pair(self, record: dict[str, Any]) -> tuple[str, str, str]:
        """(input, output, system); raises ValueError with the reason for a bad record."""
        if self.input_field or self.output_field:
            return _text(record, self.input_field or "input"), _text(record, self.output_field or "output"), ""
        if isinstance(record.get("messages"), list):
            return _from_messages(record["messages"])
        for source, target in FIELD_PAIRS:
            if source in record and target in record:
                text = _text(record, source)
                if source == "instruction" and str(record.get("input") or "").strip():
                    text = f"{text}\n\n{_text(record, 'input')}"
                return text, _text(record, target), ""
        for source, target in FIELD_PAIRS:
            if (source in record) != (target in record):
                raise ValueError(f"no {target if source in record else source!r} field")
        names = ", ".join(f"{a}/{b}" for a, b in FIELD_PAIRS)
        raise ValueError(
            f"no input/output fields (found {', '.join(sorted(record)) or 'none'}; expected {names}, "
            "messages, or give --input-field/--output-field)"
        )


def _text(record: dict[str, Any], name: str) -> str:
    if name not in record:
        raise ValueError(f"no {name!r} field")
    value = record[name]
    if value is None or isinstance(value, (dict, list)):
        raise ValueError(f"field {name!r} is not text")
    text = str(value).strip()
    if not text:
        raise ValueError(f"field {name!r} is empty")
    return text


def _from_messages(messages: list[Any]) -> tuple[str, str, str]:
    """The last user turn and the assistant reply after it; the system message if there is one."""
    turns = [m for m in messages if isinstance(m, dict) and isinstance(m.get("content"), str)]
    system = next((m["content"].strip() for m in turns if m.get("role") == "system"), "")
    for i in range(len(turns) - 1, 0, -1):
        if turns[i].get("role") == "assistant" and turns[i - 1].get("role") == "user":
            user, reply = turns[i - 1]["content"].strip(), turns[i]["content"].strip()
            if user and reply:
                return user, reply, system
    raise ValueError("messages have no user turn followed by an assistant reply")


def read_examples(path: Path, input_field: str | None = None, output_field: str | None = None) -> ParsedFile:
    """Every readable row of a .jsonl/.json/.csv file, with the skipped lines and why."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"no such file: {path}")
    data = path.read_bytes()
    if not data.strip():
        raise TunelabError(f"{path} is empty: nothing to import")
    mapping = FieldMapping(input_field, output_field)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        parsed = _parse(_jsonl_records(data), mapping)
    elif suffix in (".csv", ".tsv"):
        parsed = _parse(_csv_records(path, data, "\t" if suffix == ".tsv" else ","), mapping)
    else:
        raise TunelabError(f"{path}: unknown file type {suffix or '(none)'}: use .jsonl or .csv")
    if not parsed.rows:
        raise TunelabError(f"{path}: no usable rows ({parsed.skipped_summary()})")
    return parsed


def _parse(records: Iterator[tuple[int, dict[str, Any] | str]], mapping: FieldMapping) -> ParsedFile:
    parsed = ParsedFile()
    for line, record in records:
        if isinstance(record, str):
            parsed.skipped.append((line, record))
            continue
        try:
            text, output, system = mapping.pair(record)
        except ValueError as exc:
            parsed.skipped.append((line, str(exc)))
            continue
        parsed.rows.append(ExampleRow(text, output, line))
        parsed.system = parsed.system or system
    return parsed


def _jsonl_records(data: bytes) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, record or the reason it is bad) for each non-blank line."""
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield number, "not UTF-8 text"
            continue
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON ({exc.msg})"
            continue
        yield number, record if isinstance(record, dict) else "not a JSON object"


def _csv_records(path: Path, data: bytes, delimiter: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TunelabError(f"{path}: not UTF-8 text at line {line} (save it as UTF-8)") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for record in reader:
            if None in record:
                yield reader.line_num, "more values than header columns"
            elif not any((v or "").strip() for v in record.values()):
                continue
            else:
                yield reader.line_num, {k: v for k, v in record.items() if v is not None}
    except csv.Error as exc:
        raise TunelabError(f"{path}: bad CSV at line {reader.line_num}: {exc}") from None


INPUT_FIELDS = ("input", "prompt", "question", "text", "instruction")
"""Fields read as the input of an unlabelled JSONL record, in this order (`--input-field` overrides)."""


def read_inputs(path: Path, input_field: str | None = None) -> ParsedFile:
    """Unlabelled inputs for a teacher to answer: a .jsonl file (an input field per record) or any
    other text file, one input per line. Rows come back with an empty output."""
    path = Path(path)
    if not path.is_file():
        raise TunelabError(f"no such file: {path}")
    data = path.read_bytes()
    parsed = ParsedFile()
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for line, record in _jsonl_records(data):
            if isinstance(record, str):
                parsed.skipped.append((line, record))
                continue
            names = [input_field] if input_field else [n for n in INPUT_FIELDS if n in record][:1]
            try:
                parsed.rows.append(ExampleRow(_text(record, names[0] if names else INPUT_FIELDS[0]), "", line))
            except ValueError as exc:
                parsed.skipped.append((line, str(exc)))
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise TunelabError(f"{path}: not UTF-8 text at line {line} (save it as UTF-8)") from None
        parsed.rows = [ExampleRow(line.strip(), "", n) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not parsed.rows:
        raise TunelabError(f"{path}: no inputs" + (f" ({parsed.skipped_summary()})" if parsed.skipped else ""))
    return parsed
