"""A remote inference engine: any OpenAI-compatible server, behind the same interface as llama.cpp.

A team that shares one GPU box keeps tunelab as the front end and points it at the server
(`--engine-url`, or `engine_url` in config.toml; the API key, if the server wants one, comes from
`TUNELAB_ENGINE_API_KEY` and is never stored). Chat, ICL, best-of, compare and the side-by-side
screen call `chat` / `count_tokens` / `fit` exactly as on `LlamaEngine`.

Servers differ in three places, found out once when the engine connects:

- **adapters.** llama.cpp's `llama-server` lists its LoRAs at `GET /lora-adapters` and takes a
  per-request `lora: [{id, scale}]`; a tunelab adapter maps to the entry whose file is the
  adapter's GGUF (or whose file or folder is named like the adapter). vLLM (`--lora-modules
  NAME=PATH`) and llama-cpp-python's server (a config file with one model entry per adapter,
  `model_alias` = NAME, `lora_path` = the GGUF) serve each adapter as a model id named like the
  adapter. An adapter the server lacks is refused in one line before anything runs.
- **the KV/prompt cache across adapters.** llama-server has reused a slot's cached prompt for a
  request with another adapter (issue #26207), and its RAM prompt cache (`--cache-ram`, on by
  default) appears to: an adapter's answer changed when base-model requests for the same prompts
  had run before it, and not with `--cache-ram 0` (llama.cpp vendored in llama-cpp-python 0.3.36;
  tests/test_llama_server.py). With
  LoRAs loaded, tunelab therefore sends `cache_prompt: false` on every request, unless the user
  says the server runs with `--cache-ram 0` (`engine_prompt_cache`): then each adapter setting is
  pinned to its own slot (`id_slot`) and `cache_prompt` is false only when a slot's previous
  request used another setting. vLLM keys its prefix cache by LoRA, and llama-cpp-python's server
  loads one `Llama` per model entry, so neither shares a cache between adapters.
- **token counts.** Replies take theirs from the server's `usage`. llama-cpp-python's server
  sends none while streaming: there the completion's one-token chunks are counted, and the prompt
  is counted by the same request again, unstreamed, for one token (its prompt cache makes that a
  lookup). Fitting a prompt to the context (ICL examples, old turns) asks the server's tokenizer:
  llama-server's `/apply-template` + `/tokenize`, vLLM's `/tokenize`; llama-cpp-python has no
  template endpoint, so there the message texts are counted (`/extras/tokenize/count`) plus a
  per-message allowance and what its template added to a one-message prompt, measured once.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tunelab.engine.chat_template import ChatMessage
from tunelab.engine.context import fit_history, prompt_budget
from tunelab.engine.reply import Reply, ReplyStats
from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.text import one_line

API_KEY_VARIABLE = "TUNELAB_ENGINE_API_KEY"
TEMPLATE_TOKENS_PER_MESSAGE = 4
"""Role markers and separators a chat template adds per message, where the server can't render it."""
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 600.0
"""Between two streamed chunks: a big model on a busy server may think long before its first token."""


@dataclass(frozen=True)
class ServerTarget:
    """What one request names on the server: a model id and, for llama-server, LoRA scales."""

    model: str
    lora: tuple[tuple[int, float], ...] = ()
    """(llama-server adapter id, scale) for every adapter it has loaded: the chosen one at its scale, the rest 0."""


def api_root(url: str) -> str:
    """`http://host:port`, `http://host:port/` and `http://host:port/v1` all name the same server."""
    root = url.strip().rstrip("/")
    if not root.startswith(("http://", "https://")):
        raise TunelabError(f"bad engine URL {url!r}: give http://HOST:PORT of an OpenAI-compatible server")
    return root.removesuffix("/v1")


class RemoteEngine:
    """An OpenAI-compatible server's model, streamed like the in-process engine."""

    def __init__(self, url: str, model: str = "", n_ctx: int = 4096, api_key: str | None = None, prompt_cache: bool = False) -> None:
        """`model`: the server's model id for the base ("" = the one it serves, when it lists one
        that is no adapter). `prompt_cache`: the llama-server runs with `--cache-ram 0`, so a
        slot's own cache may be reused within an adapter setting. Connects now, so a wrong URL or
        a server that is down is one line here."""
        self.url = api_root(url)
        key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        self.lora_path: Path | None = None
        self.lora_scale = 1.0
        self.adapter: str | None = None
        self._lock = threading.Lock()
        self._slot_of: dict[ServerTarget, int] = {}
        self._slot_last: dict[int, ServerTarget] = {}
        models = self._get_json("/v1/models").get("data", [])
        self.model_ids = [m["id"] for m in models]
        if not self.model_ids:
            raise TunelabError(f"the engine at {self.url} serves no model (GET /v1/models listed none)")
        self.server_loras = self._llama_server_loras()
        self.prompt_cache = prompt_cache or not self.server_loras
        """Whether a request may reuse cached KV: always without LoRAs, else only when the user said so."""
        props = self._optional_json("GET", "/props") if self.server_loras is not None else None
        self.base_model = self._pick_base(model)
        self.n_ctx = self._context_size(props, models, n_ctx)
        self.slots = int((props or {}).get("total_slots") or 1)
        self._target = ServerTarget(self.base_model, self._lora_scales(None, 1.0))
        self._template_tokens = 0
        self._count = self._pick_counter()
        if self._count == self._count_llama_cpp_python:
            probe = [ChatMessage("user", "hi")]
            body = self._request_body(probe, SamplerParams(temperature=0, max_tokens=1, seed=0))
            self._template_tokens = self._unstreamed_prompt_tokens(body) - self._count(probe)

    # -- what the server is ----------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return f"{self.base_model} @ {self.url}"

    @property
    def served_model(self) -> str:
        """The server's id of what answers now: the base, or the adapter's model id on vLLM-style servers."""
        return self._target.model

    def _pick_base(self, model: str) -> str:
        if model:
            if model not in self.model_ids:
                raise TunelabError(f"the engine at {self.url} has no model {model!r} (it serves {', '.join(self.model_ids)})")
            return model
        return self.model_ids[0]

    def _context_size(self, props: dict[str, Any] | None, models: list[dict[str, Any]], default: int) -> int:
        """llama-server's /props, vLLM's max_model_len, else the setting (llama-cpp-python tells neither)."""
        if props and (n := (props.get("default_generation_settings") or {}).get("n_ctx")):
            return int(n)
        for entry in models:
            if entry.get("id") == self.base_model and entry.get("max_model_len"):
                return int(entry["max_model_len"])
        return default

    def _llama_server_loras(self) -> list[dict[str, Any]] | None:
        found = self._optional_json("GET", "/lora-adapters")
        return found if isinstance(found, list) else None

    # -- adapters --------------------------------------------------------------------------------
    def set_adapter(self, name: str | None, path: Path | None, scale: float = 1.0) -> None:
        """Answer with tunelab adapter `name` (its GGUF at `path`) at `scale`; None = the base.
        Refused in one line when the server does not serve it."""
        target = ServerTarget(self._adapter_model(name), self._lora_scales(path if name else None, scale, name))
        with self._lock:
            self._target = target
            self.adapter, self.lora_path, self.lora_scale = name, path if name else None, scale

    def _adapter_model(self, name: str | None) -> str:
        if name is None or self.server_loras is not None:
            return self.base_model
        if name not in self.model_ids:
            raise TunelabError(
                f"the engine at {self.url} does not serve adapter {name!r}: serve it as a model named {name!r} "
                f"(vLLM: --lora-modules {name}=PATH; llama-cpp-python: a model entry with model_alias {name!r} and lora_path)"
            )
        return name

    def _lora_scales(self, path: Path | None, scale: float, name: str | None = None) -> tuple[tuple[int, float], ...]:
        """llama-server applies every loaded LoRA unless told otherwise: each gets scale 0 but the chosen one."""
        if self.server_loras is None:
            return ()
        chosen = None
        if path is not None:
            matches = [entry["id"] for entry in self.server_loras if same_adapter(str(entry.get("path", "")), path, name or "")]
            if not matches:
                raise TunelabError(
                    f"the llama-server at {self.url} has not loaded adapter {name!r}: start it with --lora {path} "
                    f"(it has {', '.join(str(e.get('path')) for e in self.server_loras) or 'none'})"
                )
            chosen = matches[0]
        return tuple((int(entry["id"]), scale if entry["id"] == chosen else 0.0) for entry in self.server_loras)

    # -- tokens ----------------------------------------------------------------------------------
    def count_tokens(self, messages: list[ChatMessage]) -> int:
        return self._count(messages)

    def fit(self, messages: list[ChatMessage], max_tokens: int) -> tuple[list[ChatMessage], int]:
        """The messages that fit the context with `max_tokens` left for the reply."""
        return fit_history(messages, prompt_budget(self.n_ctx, max_tokens), self.count_tokens)

    def _pick_counter(self) -> Callable[[list[ChatMessage]], int]:
        """The first tokenizer endpoint the server answers, tried on a one-message prompt."""
        probe = [ChatMessage("user", "hi")]
        candidates = [self._count_llama_server] if self.server_loras is not None else []
        candidates += [self._count_vllm, self._count_llama_cpp_python]
        for counter in candidates:
            try:
                counter(probe)
            except (TunelabError, KeyError, TypeError, ValueError):
                continue
            return counter
        raise TunelabError(f"the engine at {self.url} has no tokenizer endpoint tunelab knows (/tokenize, /extras/tokenize/count)")

    def _count_llama_server(self, messages: list[ChatMessage]) -> int:
        prompt = self._post_json("/apply-template", {"messages": [m.as_dict() for m in messages]})["prompt"]
        return len(self._post_json("/tokenize", {"content": prompt, "add_special": True})["tokens"])

    def _count_vllm(self, messages: list[ChatMessage]) -> int:
        body = {"model": self.base_model, "messages": [m.as_dict() for m in messages], "add_generation_prompt": True}
        return int(self._post_json("/tokenize", body)["count"])

    def _count_llama_cpp_python(self, messages: list[ChatMessage]) -> int:
        text = "\n".join(m.content for m in messages)
        # the model answering now: naming another one would make this server load it (one model at a time)
        count = int(self._post_json("/extras/tokenize/count", {"model": self._target.model, "input": text})["count"])
        return count + TEMPLATE_TOKENS_PER_MESSAGE * len(messages) + self._template_tokens

    def _unstreamed_prompt_tokens(self, body: dict[str, Any]) -> int:
        """The prompt's tokens as the server counts them: the request again, unstreamed, for one token."""
        once = {k: v for k, v in body.items() if k != "stream_options"} | {"stream": False, "max_tokens": 1}
        return int(self._post_json("/v1/chat/completions", once)["usage"]["prompt_tokens"])

    # -- replies ---------------------------------------------------------------------------------
    def chat(self, messages: list[ChatMessage], params: SamplerParams | None = None) -> Reply:
        """Stream a reply to `messages` (oldest turns dropped if they don't fit). The request is
        sent now: a server that is down or answers with an error is one line here, before the
        caller stores anything; a stream cut later keeps the text so far (`stats.error`)."""
        params = (params or SamplerParams()).seeded()
        if not messages or not messages[-1].content.strip():
            raise TunelabError("empty prompt: type something to send")
        fitted, dropped = self.fit(messages, params.max_tokens)
        stats = ReplyStats(dropped_turns=dropped, prompt_tokens=self.count_tokens(fitted))
        start = time.perf_counter()
        body = self._request_body(fitted, params)
        return Reply(self._stream(self._open_stream(body), body, stats, start), stats, fitted)

    def answer_together(
        self, conversations: Sequence[list[ChatMessage]], params: Sequence[SamplerParams], parallel: int = 0
    ) -> Generator[tuple[int, Reply], None, None]:
        """(index, finished reply) as each ends, with `parallel` requests in flight (0: one at a
        time, since the server's slots are its own setting; llama-server `--parallel N` and vLLM
        decode concurrent requests together). Closing the iterator sends no further requests and
        waits for those in flight."""
        if len(conversations) != len(params):
            raise ValueError("one SamplerParams per conversation")

        def finished(index: int) -> tuple[int, Reply]:
            reply = self.chat(conversations[index], params[index])
            reply.whole_text()
            return index, reply

        pool = ThreadPoolExecutor(max(1, parallel), thread_name_prefix="tunelab-remote")
        try:
            for future in as_completed([pool.submit(finished, i) for i in range(len(conversations))]):
                yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _request_body(self, messages: list[ChatMessage], params: SamplerParams) -> dict[str, Any]:
        with self._lock:
            target = self._target
            extra: dict[str, Any] = {}
            if self.server_loras is not None:
                # each adapter setting keeps to one slot; a slot reused by another setting starts cold
                slot = self._slot_of.setdefault(target, len(self._slot_of) % self.slots)
                extra = {
                    "lora": [{"id": i, "scale": s} for i, s in target.lora],
                    "id_slot": slot,
                    "cache_prompt": self.prompt_cache and self._slot_last.get(slot) == target,
                }
                self._slot_last[slot] = target
        body: dict[str, Any] = {
            "model": target.model,
            "messages": [m.as_dict() for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "seed": params.seed,
            # llama.cpp's servers read repeat_penalty, vLLM repetition_penalty; each ignores the other
            "repeat_penalty": params.repeat_penalty,
            "repetition_penalty": params.repeat_penalty,
            **extra,
        }
        if params.stop:
            body["stop"] = params.stop
        return body

    def _open_stream(self, body: dict[str, Any]) -> httpx.Response:
        request = self.client.build_request("POST", "/v1/chat/completions", json=body)
        try:
            response = self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise TunelabError(f"cannot reach the engine at {self.url}: {one_line(str(exc) or type(exc).__name__, 160)}") from None
        if response.status_code != 200:
            detail = one_line(response.read().decode("utf-8", "replace"), 200)
            response.close()
            raise TunelabError(f"the engine at {self.url} answered {response.status_code}: {detail or response.reason_phrase}")
        return response

    def _stream(self, response: httpx.Response, body: dict[str, Any], stats: ReplyStats, start: float) -> Iterator[str]:
        first = last = None
        counted = 0
        usage_seen = False
        finish = ""
        stats.finish_reason = "cancelled"
        try:
            for event in server_sent_events(response.iter_lines()):
                if event is None:
                    break
                if usage := event.get("usage"):
                    usage_seen = True
                    stats.prompt_tokens = int(usage.get("prompt_tokens") or stats.prompt_tokens)
                    stats.completion_tokens = int(usage.get("completion_tokens") or 0)
                for choice in event.get("choices") or []:
                    finish = choice.get("finish_reason") or finish
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        last = time.perf_counter()
                        if first is None:
                            first = last
                            stats.ttft_ms = (first - start) * 1000
                        counted += 1
                        yield text
            if not finish:
                raise httpx.RemoteProtocolError("the stream ended before the reply did")
            stats.finish_reason = "length" if finish == "length" else "stop"
            if not usage_seen:
                with contextlib.suppress(TunelabError):  # the reply is whole; its count stays the tokenizer's estimate
                    stats.prompt_tokens = self._unstreamed_prompt_tokens(body)
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            stats.finish_reason = "error"
            stats.error = f"the engine at {self.url} broke off mid-reply: {one_line(str(exc) or type(exc).__name__, 160)}"
        finally:
            response.close()
            if not usage_seen:
                stats.completion_tokens = counted  # one chunk per token where no usage is sent (llama-cpp-python)
            stats.set_timings(start, first, last, time.perf_counter())

    # -- HTTP ------------------------------------------------------------------------------------
    def _get_json(self, path: str) -> Any:
        return self._json(self._call("GET", path), path)

    def _post_json(self, path: str, body: dict[str, Any]) -> Any:
        return self._json(self._call("POST", path, body), path)

    def _optional_json(self, method: str, path: str) -> Any:
        """An endpoint only some servers have: None where this one lacks it."""
        try:
            return self._json(self._call(method, path), path)
        except TunelabError:
            return None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        try:
            response = self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise TunelabError(f"cannot reach the engine at {self.url}: {one_line(str(exc) or type(exc).__name__, 160)}") from None
        if response.status_code != 200:
            raise TunelabError(
                f"the engine at {self.url} answered {response.status_code} to {method} {path}: {one_line(response.text, 160) or response.reason_phrase}"
            )
        return response

    def _json(self, response: httpx.Response, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise TunelabError(f"{self.url}{path} did not answer JSON: is it an OpenAI-compatible server?") from None

    def close(self) -> None:
        self.client.close()


def same_adapter(server_path: str, path: Path, name: str) -> bool:
    """Whether llama-server's adapter file `server_path` is tunelab's adapter `name` at `path`:
    the same file, or a file or folder named like the adapter (the server may see another mount)."""
    theirs = Path(server_path)
    return theirs == path or theirs.resolve() == path.resolve() or name in (theirs.stem, theirs.parent.name)


def server_sent_events(lines: Iterator[str]) -> Iterator[dict[str, Any] | None]:
    """The JSON payloads of an OpenAI-style event stream; None for its closing `[DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            yield None
            return
        if payload:
            yield json.loads(payload)
