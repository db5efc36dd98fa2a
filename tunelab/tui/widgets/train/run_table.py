"""Past and current training runs, one row each; the row key is the run's name."""

from __future__ import annotations

from textual.widgets import DataTable

from tunelab.runtime.training import RunListing

COLUMNS = ("run", "method", "bank", "status", "step", "loss", "tok/s", "adapter")


class RunTable(DataTable[str]):
    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns(*COLUMNS)

    def show(self, listing: RunListing) -> None:
        self.clear()
        for run in listing.runs:
            losses = [h["loss"] for h in run.loss_history]
            loss = f"{losses[0]:.3f} → {losses[-1]:.3f}" if losses else "-"
            status = run.status + (" (resumable)" if run.name in listing.resumable else "")
            checkpoint = run.last_checkpoint if run.status not in ("done", "running") else None
            step = f"{run.step}/{run.total_steps}" + (f" · saved {checkpoint.name.split('-')[1]}" if checkpoint else "")
            self.add_row(
                run.name,
                run.method,
                run.bank,
                status,
                step,
                loss,
                f"{run.tokens_per_s:.0f}" if run.tokens_per_s else "-",
                listing.adapters.get(run.id, "-"),
                key=run.name,
            )

    @property
    def selected_run(self) -> str | None:
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
