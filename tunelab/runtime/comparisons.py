"""Comparisons as `tunelab compare` / `tunelab reports` see them: prepare (bank, test set, arms and
the optional reward model, every refusal before anything is generated), run and finish into a
report, and the past comparisons with their reports.

The run itself is `runtime.compare`; this is the one door the CLI goes through, so the reward
model comes from the runtime's loader and the grid's defaults from one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.engine.sampling import SamplerParams
from tunelab.errors import TunelabError
from tunelab.eval.arms import DEFAULT_K, SELECTOR_KINDS, Arm, parse_selectors, standard_grid
from tunelab.eval.report import load_report, report_dir
from tunelab.eval.scorer import Scorer
from tunelab.eval.statistics import WinRate
from tunelab.runtime import arena
from tunelab.runtime.arm_runner import ArmRunner
from tunelab.runtime.compare import ProgressCallback, finish, run_comparison
from tunelab.runtime.runtime import Runtime
from tunelab.runtime.test_sets import TestSet, bank_test_set, file_test_set, list_banks, open_bank
from tunelab.stores.comparisons import Comparison, ComparisonStore
from tunelab.stores.runs import latest_adapter_for_bank

if TYPE_CHECKING:
    from tunelab.stores.banks import Bank
    from tunelab.stores.feedback import PreferenceVote, Rating


@dataclass(frozen=True)
class CompareSpec:
    """What the user asked to compare; `arms` (explicit names) replaces the grid of adapters x selectors."""

    bank: str
    adapters: tuple[str, ...] = ()
    no_adapter: bool = False
    selectors: str = ",".join(SELECTOR_KINDS)
    k: int = DEFAULT_K
    arms: tuple[str, ...] = ()
    limit: int | None = None
    test_file: Path | None = None
    reward_model: str | None = None


@dataclass
class PreparedComparison:
    """A comparison ready to run: every refusal (bad limit, unknown bank, reward model for another
    base) has happened already."""

    bank: Bank
    test_set: TestSet
    arms: list[Arm]
    reward_model: tuple[str, Scorer] | None

    @property
    def steps(self) -> int:
        return len(self.arms) * len(self.test_set.items)


class ComparisonService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = ComparisonStore(runtime.conn)

    def bank_names(self) -> list[str]:
        return list_banks(self.runtime.conn)

    def default_adapters(self, bank: str) -> list[str]:
        """The newest finished adapter trained on this bank, if any: the fine-tune half of the grid."""
        newest = latest_adapter_for_bank(self.runtime.conn, bank)
        return [newest] if newest else []

    def arm_choices(self, bank: str) -> list[Arm]:
        """A starting set for the side-by-side screen: base, base+embedding, and the bank's adapter."""
        return standard_grid(["embedding"], DEFAULT_K, self.default_adapters(bank))[:4]

    def latest_report_dir(self) -> str | None:
        """The report folder of the newest finished comparison, if any."""
        comparison = self.store.latest_done()
        return comparison.report_dir if comparison is not None and comparison.report_dir else None

    def arm_runner(self, bank: str) -> ArmRunner:
        """A runner for one bank's arms on the app's engine (the side-by-side screen keeps one per bank)."""
        return ArmRunner(self.runtime, open_bank(self.runtime.conn, bank))

    def test_set(self, bank: str, limit: int | None = None) -> TestSet:
        """The bank's held-out items (a learning curve scores on them)."""
        return bank_test_set(self.runtime.conn, open_bank(self.runtime.conn, bank), limit)

    def record_vote(self, round_: arena.ArenaRound, choice: str) -> PreferenceVote:
        """A blind vote between the round's two arms ("left", "right", "tie", "both_bad")."""
        return arena.record_vote(self.runtime.conn, round_, choice)

    def rate_column(self, round_: arena.ArenaRound, column: int, rating: str | None) -> Rating | None:
        """👍 / 👎 (None removes it) on one column's reply, stored with the reply's provenance."""
        return arena.rate_column(self.runtime.conn, round_, column, rating)

    def win_rates(self) -> list[WinRate]:
        """Every pair of arms voted on, with its win rate and interval."""
        return arena.win_rates(self.runtime.conn)

    def prepare(self, spec: CompareSpec, warn: Callable[[str], None] | None = None) -> PreparedComparison:
        """The bank, its test set (`warn` hears its warnings at once), the arms and the reward model."""
        if spec.limit is not None and spec.limit < 1:
            raise TunelabError(f"--limit must be >= 1 (got {spec.limit})")
        selectors = parse_selectors(spec.selectors)
        conn = self.runtime.conn
        bank = open_bank(conn, spec.bank)
        test_set = file_test_set(conn, bank, spec.test_file, spec.limit) if spec.test_file else bank_test_set(conn, bank, spec.limit)
        if warn is not None:
            for warning in test_set.warnings:
                warn(warning)
        chosen = [] if spec.no_adapter else list(spec.adapters) or self.default_adapters(bank.name)
        arms = list(dict.fromkeys(Arm.parse(a) for a in spec.arms)) or standard_grid(selectors, spec.k, chosen)
        # loaded before generating: a reward model for another base is refused up front
        scorer = self.runtime.reward_model(spec.reward_model) if spec.reward_model else None
        return PreparedComparison(bank, test_set, arms, scorer)

    def run(self, prepared: PreparedComparison, params: SamplerParams, progress: ProgressCallback | None = None) -> tuple[Comparison, Path]:
        """Answer every (arm, item) not stored yet, then summarise into the report folder.

        An exception from `progress` (Ctrl-C) stops after the current item was stored; running
        the same comparison again resumes."""
        runner = ArmRunner(self.runtime, prepared.bank)
        try:
            comparison = run_comparison(runner, prepared.test_set, prepared.arms, params, progress)
        finally:
            runner.close()
        votes = arena.win_rates(self.runtime.conn) if prepared.reward_model else []
        labels, warnings = prepared.bank.labels, prepared.test_set.warnings
        return finish(self.runtime.settings, self.runtime.conn, comparison.id, labels, warnings, prepared.reward_model, votes)

    def reports(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first: each comparison's record with its item count and verdict when finished."""
        records = []
        for c in self.store.list()[: limit or None]:
            report = load_report(Path(c.report_dir)) if c.report_dir else None
            records.append(
                {**asdict(c), "n_items": len(report["items"]) if report else None, "verdict": report["verdict"] if report else []}
            )
        return records

    def report(self, comparison_id: int) -> tuple[Comparison, Path]:
        """A finished comparison and its report folder."""
        comparison = self.store.get(comparison_id)
        if not comparison.report_dir:
            raise TunelabError(f"comparison {comparison_id} is unfinished: run the same `tunelab compare` again to resume")
        return comparison, Path(comparison.report_dir)

    def delete(self, comparison_id: int) -> list[Path]:
        """Delete the comparison's stored answers and its report folder; the paths removed."""
        settings = self.runtime.settings
        return self.store.delete(comparison_id, [report_dir(settings, comparison_id)], settings.home)
