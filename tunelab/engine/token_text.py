"""Sampled tokens to reply text, the same way for a streamed reply and a batched one."""

from __future__ import annotations

import codecs

import llama_cpp
from llama_cpp import Llama

from tunelab.engine.reply import ReplyStats, StopStrings


class TokenText:
    """Text of one reply as its tokens come: end of turn, stop strings, and characters whose
    bytes are split across tokens."""

    def __init__(self, llama: Llama, stops: list[str]) -> None:
        self.llama = llama
        self.vocab = llama._model.vocab
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.stops = StopStrings(stops)
        self.hit = False

    def is_end(self, token: int) -> bool:
        """Whether `token` ends the turn (it is not part of the reply)."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def feed(self, token: int) -> str:
        """The text safe to show after `token`; `hit` turns true when a stop string appeared."""
        text, self.hit = self.stops.feed(self.decoder.decode(self.llama.detokenize([token])))
        return text

    def take(self, token: int, stats: ReplyStats, room: int) -> tuple[str, bool]:
        """Take one sampled token into the reply: the text to show and whether the reply is now
        complete (end of turn, a stop string, or `room` tokens), counted and reasoned in `stats`."""
        if self.is_end(token):
            stats.finish_reason = "stop"
            return "", True
        stats.completion_tokens += 1
        text = self.feed(token)
        if self.hit:
            stats.finish_reason = "stop"
            return text, True
        if stats.completion_tokens >= room:
            stats.finish_reason = "length"
            return text, True
        return text, False

    def tail(self) -> str:
        """What was held back, at the end of a reply that no stop string ended.

        No final=True: bytes of a character the length limit cut in half are dropped, not stored
        as U+FFFD (seen: a Japanese reply cut at max_tokens ending in "�")."""
        return "" if self.hit else self.stops.flush()
