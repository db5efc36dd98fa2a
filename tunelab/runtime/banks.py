"""Example banks as the CLI and the screens see them: import from files or the packaged demos,
list, show, export, delete (rows and their embedding index together) and index.

Printing stays with the caller: methods return what happened (an import's result and the lines
it skipped, an export's text, a note when the index could not be dropped).
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tunelab.config import Settings
from tunelab.errors import TunelabError
from tunelab.stores import demo_banks
from tunelab.stores.bank_files import ParsedFile, read_examples
from tunelab.stores.banks import DEFAULT_TEST_SIZE, Bank, BankStore, Example, ImportResult
from tunelab.stores.files import atomic_write_text

DEMO_NAMES = sorted(demo_banks.DEMOS)
TEST_SIZE = DEFAULT_TEST_SIZE
"""The share of a new bank held out for testing unless the caller says otherwise."""


Warn = Callable[[str], None]
"""Hears a problem that does not stop the work (bad lines skipped), as soon as it is known."""


@dataclass(frozen=True)
class BankExport:
    text: str
    examples: int


class BankService:
    def __init__(self, settings: Settings, conn: sqlite3.Connection) -> None:
        self.settings = settings
        self.conn = conn
        self.store = BankStore(conn)

    def get(self, name: str) -> Bank:
        """The bank, or a one-line error naming the ones that exist."""
        return self.store.get(name)

    def banks(self) -> list[Bank]:
        return self.store.list()

    def examples(self, name: str, split: str | None = None) -> list[Example]:
        return self.store.examples(name, split)

    def import_file(
        self,
        name: str,
        path: Path,
        instruction: str | None,
        input_field: str | None = None,
        output_field: str | None = None,
        strict: bool = False,
        test_size: float = TEST_SIZE,
        seed: int = 0,
        warn: Warn | None = None,
    ) -> ImportResult:
        """Create bank `name` from a JSONL or CSV file; the instruction defaults to a system message found in it."""
        if self.store.exists(name):
            raise TunelabError(f"bank {name!r} already exists: add to it with `tunelab bank add {name} FILE` or pick another name")
        parsed = read_checked(path, input_field, output_field, strict, warn)
        text = parsed.system if instruction is None else instruction
        return self.store.create(name, parsed.rows, text, test_size, seed, source=str(path.resolve()))

    def add_file(
        self,
        name: str,
        path: Path,
        input_field: str | None = None,
        output_field: str | None = None,
        strict: bool = False,
        warn: Warn | None = None,
    ) -> ImportResult:
        """Add a file's examples to bank `name` (split with the bank's seed and test share)."""
        self.store.get(name)
        return self.store.add(name, read_checked(path, input_field, output_field, strict, warn).rows)

    def import_demo(
        self, demo: str, name: str | None, size: int | None, language: str, test_size: float = TEST_SIZE, seed: int = 0
    ) -> ImportResult:
        """A packaged demo bank: `sentiment` (default 400 reviews), `qa` (all, in `language`) or `longdoc` (default 60)."""
        if size is not None and size < 2:
            raise TunelabError(f"--size must be at least 2 (got {size})")
        if demo == "sentiment":
            bank = demo_banks.sentiment(size or 400, seed)
        elif demo == "longdoc":
            bank = demo_banks.longdoc(size or 60, seed)
        else:
            bank = demo_banks.qa(language, size or 0)
        return self.store.create(name or bank.name, bank.rows, bank.instruction, test_size, seed, source=bank.source)

    def export(self, name: str, split: str | None, fmt: str, path: Path | None = None) -> BankExport:
        """The examples (id, input, output, split) as `fmt` ("jsonl" or "csv"), written whole or not at all to `path` when given."""
        records = [{"id": e.id, "input": e.input, "output": e.output, "split": e.split} for e in self.store.examples(name, split)]
        if fmt == "jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=["id", "input", "output", "split"])
            writer.writeheader()
            writer.writerows(records)
            text = buffer.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return BankExport(text, len(records))

    def delete(self, name: str) -> str | None:
        """Delete the bank, its examples and its embedding index (runs and reports keep their records).

        The rows go first: an index left behind only costs disk, so failing to drop it is a note
        (returned) rather than an error."""
        bank = self.store.get(name)
        self.store.delete(name)
        from tunelab.stores.chroma_index import drop_bank  # Chroma loads only when a bank is deleted

        try:
            drop_bank(self.settings, bank)
        except TunelabError as exc:
            return f"the embedding index was not removed: {exc}"
        return None

    def index(self, name: str, progress: Callable[[int, int], None] | None = None) -> tuple[Bank, int]:
        """Embed the train split into Chroma now (otherwise done on first use); (bank, examples embedded now)."""
        from tunelab.icl.selectors import make_selector

        bank = self.store.get(name)
        selector = make_selector("embedding", bank, self.conn, self.settings, progress=progress)
        return bank, selector.indexed  # type: ignore[attr-defined]  # an EmbeddingSelector


def read_checked(path: Path, input_field: str | None, output_field: str | None, strict: bool, warn: Warn | None) -> ParsedFile:
    """The file's rows; with `strict` any bad line refuses the whole file, else `warn` hears what was skipped."""
    parsed = read_examples(path, input_field, output_field)
    if parsed.skipped and strict:
        raise TunelabError(f"{path}: {len(parsed.skipped)} bad line(s), nothing imported (--strict): {parsed.skipped_summary()}")
    if parsed.skipped and warn is not None:
        warn(f"skipped {len(parsed.skipped)} bad line(s): {parsed.skipped_summary()}")
    return parsed
