"""Word tokens for Jaccard overlap that also work for Chinese, Japanese and Korean.

`text.split(" ")` sees a whole Chinese sentence as one token, so two Chinese questions overlap
only when identical. Here text is lower-cased; runs of CJK characters become their single
characters plus adjacent bigrams (the usual unit for CJK retrieval); everything else becomes
words of letters and digits (punctuation is not a token).
"""

from __future__ import annotations

import re

CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
TOKEN = re.compile(f"([{CJK}]+)|([^\\W_{CJK}]+)")


def tokenize(text: str) -> frozenset[str]:
    tokens: set[str] = set()
    for cjk, word in TOKEN.findall(text.lower()):
        if word:
            tokens.add(word)
        else:
            tokens.update(cjk)
            tokens.update(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return frozenset(tokens)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 0 for two empty sets (nothing in common to speak of)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0
