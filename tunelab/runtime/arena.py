"""One side-by-side round: a prompt, the arms in display order, their replies, and the vote.

In blind mode two arms are drawn and shuffled so the voter can't tell them by name or by
position; the names are revealed only after the vote, which is stored as a preference record.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import TunelabError
from tunelab.eval.arms import Arm, blind_order
from tunelab.eval.statistics import WinRate, pairwise_win_rates
from tunelab.runtime.arm_runner import ArmReply
from tunelab.stores.feedback import FeedbackStore, PreferenceVote, Rating, Snapshot

MAX_COLUMNS = 4


@dataclass
class ArenaRound:
    prompt: str
    arms: list[Arm]
    """Left to right, as shown."""
    blind: bool
    bank: str | None = None
    replies: dict[int, ArmReply] = field(default_factory=dict)
    """Column index -> its reply (with its provenance), once generated."""
    vote: PreferenceVote | None = None
    key: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    """Names the round in its columns' rating subjects, so re-rating a column replaces its rating."""

    @property
    def votable(self) -> bool:
        """A left/right vote needs exactly two finished replies and no vote yet."""
        return len(self.arms) == 2 and len(self.replies) == 2 and self.vote is None

    def title(self, column: int) -> str:
        """What the column header shows: a neutral letter until a blind round is voted on."""
        if self.blind and self.vote is None:
            return f"Model {'AB'[column]}"
        return self.arms[column].name


def new_round(prompt: str, arms: list[Arm], blind: bool, rng: random.Random, bank: str | None = None) -> ArenaRound:
    if not prompt.strip():
        raise TunelabError("empty prompt: type something to compare")
    if blind:
        return ArenaRound(prompt, blind_order(arms, rng), True, bank)
    if not 2 <= len(arms) <= MAX_COLUMNS:
        raise TunelabError(f"side by side shows 2 to {MAX_COLUMNS} arms (got {len(arms)})")
    return ArenaRound(prompt, list(arms), False, bank)


SIDES = {"left": "a", "right": "b", "tie": "tie", "both_bad": "both_bad"}


def record_vote(conn: sqlite3.Connection, round_: ArenaRound, choice: str) -> PreferenceVote:
    """Store the vote as a preference record: the prompt, both replies, both arms, and per side
    the messages as sent (incl. its ICL examples) with provenance - what DPO / reward models read."""
    if choice not in SIDES:
        raise TunelabError(f"unknown vote {choice!r} (choose from {', '.join(SIDES)})")
    if not round_.votable:
        raise TunelabError("vote after both replies of a two-arm round have finished (and only once)")
    left, right = round_.replies[0], round_.replies[1]
    round_.vote = FeedbackStore(conn).vote(
        PreferenceVote(
            prompt=[{"role": "user", "content": round_.prompt}],
            a_reply=left.reply.so_far,
            b_reply=right.reply.so_far,
            choice=SIDES[choice],
            a_arm=left.arm.name,
            b_arm=right.arm.name,
            model_sha256=left.provenance.model_sha256,
            a_snapshot=_snapshot(round_, 0),
            b_snapshot=_snapshot(round_, 1),
        )
    )
    return round_.vote


def _snapshot(round_: ArenaRound, column: int) -> dict[str, Any]:
    arm_reply = round_.replies[column]
    return {
        "prompt": [m.as_dict() for m in arm_reply.reply.messages],
        "reply": arm_reply.reply.so_far,
        "arm": arm_reply.arm.name,
        "adapter": arm_reply.arm.adapter,
        "provenance": arm_reply.provenance.to_dict(),
        "round": {"blind": round_.blind, "bank": round_.bank, "column": column},
    }


def rate_column(conn: sqlite3.Connection, round_: ArenaRound, column: int, rating: str | None) -> Rating | None:
    """Rate one column's finished reply 👍 / 👎 (None removes it), with the same frozen snapshot a vote keeps."""
    subject = f"arena:{round_.key}:{column}"
    if rating is None:
        FeedbackStore(conn).remove(subject)
        return None
    if column not in round_.replies:
        raise TunelabError("wait for this column's reply to finish before rating it")
    snap = _snapshot(round_, column)
    made = round_.replies[column].provenance
    snapshot = Snapshot(
        prompt=snap["prompt"],
        reply=snap["reply"],
        model_path=made.model_path,
        model_sha256=made.model_sha256,
        adapter=snap["adapter"],
        arm=snap["arm"],
        params=made.params,
        provenance=snap["provenance"],
    )
    return FeedbackStore(conn).rate(subject, snapshot, rating)


def win_rates(conn: sqlite3.Connection) -> list[WinRate]:
    """Wilson win-rates per arm pair over every side-by-side vote that names both arms."""
    to_side = {v: k for k, v in SIDES.items()}
    return pairwise_win_rates((v.a_arm, v.b_arm, to_side[v.choice]) for v in FeedbackStore(conn).votes() if v.a_arm and v.b_arm)
