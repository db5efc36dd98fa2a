"""`tunelab adapters export NAME --ollama`: the adapter GGUF and a Modelfile in Ollama's documented
syntax (docs.ollama.com/modelfile), whose TEMPLATE prompts exactly like tunelab's chat template."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from finetune_support import base_pair, random_adapter  # noqa: F401
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from server_support import free_port

from tunelab.cli import cli
from tunelab.engine.chat_template import ChatMessage
from tunelab.finetune.export_gguf import export_adapter
from tunelab.finetune.ollama import MODELFILE, convert_template, template_of
from tunelab.stores.bank_files import ExampleRow
from tunelab.stores.banks import BankStore
from tunelab.stores.runs import Adapter, RunStore

INSTRUCTION = "Classify the review as fresh or rotten."
INSTRUCTIONS = {"FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE"}
PARAMETERS = {
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "num_ctx",
    "repeat_last_n",
    "repeat_penalty",
    "temperature",
    "seed",
    "stop",
    "num_predict",
    "top_k",
    "top_p",
    "min_p",
}
TEMPLATE_VARIABLES = {"System", "Prompt", "Response", "Messages", "Role", "Content", "Tools", "First"}


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs by the documented format: `# comment`, `INSTRUCTION arguments`,
    an argument bare, "quoted" or a \"\"\"multi-line\"\"\" string; instructions are case-insensitive."""
    commands, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        assert instruction.upper() in INSTRUCTIONS, line
        if rest.startswith('"""'):
            body = rest[3:]
            while '"""' not in body:
                body, i = body + "\n" + lines[i], i + 1
            value, _, after = body.partition('"""')
            assert after.strip() == "", f"text after a closing triple quote: {after!r}"
        else:
            value = rest
        commands.append((instruction.upper(), value))
    return commands


def parameter(value: str) -> tuple[str, str]:
    name, _, argument = value.partition(" ")
    assert name in PARAMETERS, name
    if argument.startswith('"'):
        assert argument.endswith('"') and '"' not in argument[1:-1], argument
        argument = argument[1:-1]
    return name, argument


def render_go(template: str, system: str, messages: list[dict[str, str]]) -> str:
    """Ollama's rendering of the constructs a converted template uses (if/else/end, range over
    .Messages, ne, .System/.Role/.Content, `{{-` trimming): enough to compare prompts with tunelab's."""
    tokens = re.split(r"(\{\{-?\s*.*?\s*-?\}\})", template)
    parts: list[tuple[str, str]] = []
    for n, token in enumerate(tokens):
        match = re.fullmatch(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", token)
        if match is None:
            parts.append(("text", token))
            continue
        left, action, right = match.groups()
        if left and parts and parts[-1][0] == "text":
            parts[-1] = ("text", parts[-1][1].rstrip())
        parts.append(("action", action))
        if right and n + 1 < len(tokens):
            tokens[n + 1] = tokens[n + 1].lstrip()
    out: list[str] = []

    def run(i: int, scope: dict[str, str] | None, emit: bool) -> int:
        while i < len(parts):
            kind, value = parts[i]
            if kind == "text":
                if emit:
                    out.append(value)
                i += 1
            elif value in ("end", "else"):
                return i
            elif value.startswith("if "):
                condition = value[3:]
                if condition == ".System":
                    truth = bool(system)
                else:
                    field, expected = re.fullmatch(r'ne \.(\w+) "(.*)"', condition).groups()  # type: ignore[union-attr]
                    truth = scope is not None and scope[field.lower()] != expected
                i = run(i + 1, scope, emit and truth)
                if parts[i][1] == "else":
                    i = run(i + 1, scope, emit and not truth)
                i += 1
            elif value == "range .Messages":
                start = i + 1
                end = run(start, None, False)
                for message in messages:
                    run(start, message, emit)
                i = end + 1
            else:
                name = value.lstrip(".")
                if emit:
                    out.append(system if name == "System" else scope[name.lower()])  # type: ignore[index]
                i += 1
        return i

    run(0, None, True)
    return "".join(out)


@pytest.fixture
def adapter_name(conn, base_pair, tmp_path: Path) -> str:
    """A registered adapter (random LoRA weights, the GGUF tunelab's exporter writes) trained on a bank with an instruction."""
    BankStore(conn).create("reviews", [ExampleRow(f"review {i}", "fresh" if i % 2 else "rotten", i + 1) for i in range(6)], INSTRUCTION)
    peft_dir = random_adapter(base_pair.hf_dir, tmp_path / "peft", ["q_proj", "v_proj"])
    export_adapter(peft_dir, base_pair.gguf_path, peft_dir / "adapter.gguf")
    store = RunStore(conn)
    run = store.create(
        "Rev-LoRA", base_pair.gguf_path, base_pair.gguf_sha256, base_pair.hf_dir, "reviews", [0, 1], {}, tmp_path / "run", "cpu"
    )
    store.add_adapter(Adapter("Rev-LoRA", run.id, "reviews", base_pair.gguf_sha256, str(peft_dir), str(peft_dir / "adapter.gguf")))
    return "Rev-LoRA"


def export(*args: str) -> str:
    result = CliRunner().invoke(cli, ["adapters", "export", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_modelfile_follows_ollama_syntax_and_prompts_like_tunelab(adapter_name: str, base_pair, tmp_path: Path) -> None:
    out = export(adapter_name, "--ollama", str(tmp_path / "ollama"))
    folder = tmp_path / "ollama"
    assert f"ollama create rev-lora -f {folder / MODELFILE}" in out
    commands = parse_modelfile((folder / MODELFILE).read_text())
    by_name: dict[str, list[str]] = {}
    for instruction, value in commands:
        by_name.setdefault(instruction, []).append(value)
    assert by_name["FROM"] == [str(base_pair.gguf_path.resolve())]
    (adapter_path,) = by_name["ADAPTER"]
    assert Path(adapter_path).is_absolute() and Path(adapter_path).parent == folder.resolve()
    assert Path(adapter_path).read_bytes()[:4] == b"GGUF"
    assert by_name["SYSTEM"] == [INSTRUCTION]
    stops = [parameter(v) for v in by_name["PARAMETER"]]
    assert ("stop", "<|im_end|>") in stops
    (template,) = by_name["TEMPLATE"]
    used = set(re.findall(r"\.(\w+)", " ".join(re.findall(r"\{\{(.*?)\}\}", template))))
    assert used <= TEMPLATE_VARIABLES, used

    # Ollama's prompt for a chat (its SYSTEM arrives as .System and as a system message) = tunelab's
    llama_template = template_of(base_pair.gguf_path)
    assert llama_template is not None and llama_template.template == template
    from llama_cpp import Llama

    from tunelab.engine.chat_template import ChatTemplate

    chat = ChatTemplate(Llama(str(base_pair.gguf_path), vocab_only=True, verbose=False))
    turns = [{"role": "user", "content": "review 3"}, {"role": "assistant", "content": "fresh"}, {"role": "user", "content": "review 4"}]
    with_system = [{"role": "system", "content": INSTRUCTION}, *turns]
    assert render_go(template, INSTRUCTION, with_system) == chat.render([ChatMessage(**m) for m in with_system])
    # without SYSTEM, the model's default system prompt (SmolLM2 has one) is what both send
    assert render_go(template, "", turns) == chat.render([ChatMessage(**m) for m in turns])


@pytest.mark.slow
def test_merged_export_points_from_at_the_merged_gguf(adapter_name: str, tmp_path: Path) -> None:
    export(adapter_name, "--ollama", str(tmp_path / "m"), "--merged", "q8_0")
    commands = dict(parse_modelfile((tmp_path / "m" / MODELFILE).read_text()))
    merged = Path(commands["FROM"])
    assert merged == (tmp_path / "m" / "rev-lora-q8_0.gguf").resolve() and merged.read_bytes()[:4] == b"GGUF"
    assert "ADAPTER" not in commands and commands["SYSTEM"] == INSTRUCTION


def test_a_template_that_is_not_chatml_is_not_converted() -> None:
    llama3 = (
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
        "{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    formatter = Jinja2ChatFormatter(template=llama3, eos_token="<|eot_id|>", bos_token="")
    assert convert_template(lambda ms: formatter(messages=[m.as_dict() for m in ms]).prompt, "<|eot_id|>") is None


def test_unknown_adapter_and_missing_choice_are_one_line_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["adapters", "export", "nope", "--ollama", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("error: no adapter named 'nope'") and "Traceback" not in result.output
    neither = CliRunner().invoke(cli, ["adapters", "export", "nope"])
    assert neither.exit_code == 1 and "--merged TYPE" in neither.output and "--ollama" in neither.output


@pytest.mark.skipif(shutil.which("ollama") is None, reason="no ollama binary on PATH: the Modelfile is checked against the docs above")
def test_ollama_creates_the_model(adapter_name: str, tmp_path: Path) -> None:
    export(adapter_name, "--ollama", str(tmp_path / "o"))
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}", "OLLAMA_MODELS": str(tmp_path / "models")}
    server = subprocess.Popen(["ollama", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(60):
            if subprocess.run(["ollama", "list"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
        created = subprocess.run(
            ["ollama", "create", "rev-lora", "-f", str(tmp_path / "o" / MODELFILE)], env=env, capture_output=True, text=True, timeout=300
        )
        assert created.returncode == 0, created.stderr
        shown = subprocess.run(["ollama", "show", "--modelfile", "rev-lora"], env=env, capture_output=True, text=True)
        assert "<|im_start|>" in shown.stdout and INSTRUCTION in shown.stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
