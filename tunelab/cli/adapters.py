"""`tunelab adapters`: trained adapters (run, bank, metrics, files), runs, and GGUF exports."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.finetune.export_gguf import MODEL_TYPES
from tunelab.stores.runs import RunStore


@click.group("adapters", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List trained adapters (run, bank, metrics, files)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_adapters)


@command.command("list")
@pass_app
def list_adapters(app: AppContext) -> None:
    """List trained adapters."""
    store = RunStore(app.conn)
    adapters = store.adapters()
    if not adapters:
        click.echo("no adapters yet: train one with `tunelab train NAME --bank BANK`")
    for adapter in adapters:
        run = store.get(str(adapter.run_id))
        m = adapter.metrics
        loss = f"loss {m.get('first_loss') or 0:.3f}->{m.get('final_loss') or 0:.3f}" if m.get("final_loss") is not None else "loss -"
        click.echo(f"{adapter.name:<20} run {run.id:<4} bank {adapter.bank:<16} {m.get('steps', 0)} steps  {loss}  "
                   f"{m.get('train_examples', 0)} examples  {run.train_seconds:.0f}s")
        for label, path in [("peft", adapter.peft_dir), ("gguf", adapter.gguf_path), *adapter.exports.items()]:
            click.echo(f"    {label:<5} {path}")


@command.command("runs")
@pass_app
def list_runs(app: AppContext) -> None:
    """List training runs with their status; `interrupted` = its process is gone (killed, power cut).

    Continue a stopped run with `--resume RUN`, start it over with `--restart RUN`, or delete it."""
    for run in RunStore(app.conn).list():
        last = run.loss_history[-1]["loss"] if run.loss_history else None
        loss = f"loss {last:.4f}" if last is not None else ""
        stopped = ""
        if run.status not in ("done", "running"):
            checkpoint = run.last_checkpoint
            stopped = f"  last checkpoint {checkpoint.name if checkpoint else '- (none: --restart it)'}"
        click.echo(f"{run.id:<4} {run.name:<20} {run.status:<11} step {run.step}/{run.total_steps}  bank {run.bank or '-'}  {run.device}  {loss}"
                   + stopped + (f"  ({run.error})" if run.error and run.status != "done" else ""))


@command.command("delete")
@click.argument("name")
@pass_app
def delete(app: AppContext, name: str) -> None:
    """Delete NAME: an adapter, a reward model or an unfinished run, with its run and all its files.

    Works for SFT, KTO/DPO and reward runs alike; a run still training is refused."""
    removed = RunStore(app.conn).delete(name, app.settings.home)
    click.echo(f"deleted {name!r}" + (f" and {len(removed)} file(s)/folder(s): {', '.join(map(str, removed))}" if removed else ""))


@command.command("export")
@click.argument("name")
@click.option("--merged", "tensor_type", type=click.Choice(MODEL_TYPES), required=True, help="Write base + adapter as one standalone GGUF of this type.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Output file (default: beside the adapter).")
@pass_app
def export(app: AppContext, name: str, tensor_type: str, out: Path | None) -> None:
    """Merge adapter NAME into its base and write a standalone GGUF (runs anywhere llama.cpp does)."""
    from tunelab.finetune.export_gguf import export_model

    store = RunStore(app.conn)
    adapter = store.adapter(name)
    run = store.get(str(adapter.run_id))
    out = out or Path(adapter.peft_dir) / f"merged-{tensor_type}.gguf"
    export_model(Path(run.hf_dir), Path(run.base_gguf), out, tensor_type, Path(adapter.peft_dir))
    store.set_export(name, tensor_type, out)
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB); chat with it: tunelab chat --model {out} 'your prompt'")


@command.command("export-base")
@click.option("--model", "-m", default=None, help="Base GGUF (path or registered name); default: the chat model.")
@click.option("--type", "tensor_type", type=click.Choice(MODEL_TYPES), default="f16", help="Tensor type (default f16).")
@click.option("--name", default=None, help="Register the file as this model name (default: <model>-<type>).")
@pass_app
def export_base(app: AppContext, model: str | None, tensor_type: str, name: str | None) -> None:
    """Write the training weights as an unquantised GGUF: chat on exactly the weights adapters learn on."""
    from tunelab.finetune.base_weights import prepare_base
    from tunelab.finetune.export_gguf import export_model
    from tunelab.stores.models import ModelRegistry

    registry = ModelRegistry(app.conn)
    gguf_path = registry.resolve(app.settings.model if model is None else model)
    base = prepare_base(app.conn, app.settings.home / "models", gguf_path)
    out = base.hf_dir / f"base-{tensor_type}.gguf"
    export_model(base.hf_dir, base.gguf_path, out, tensor_type)
    name = name or f"{gguf_path.stem.split('.')[0].lower()}-{tensor_type}"
    registry.add(name, out)
    click.echo(f"wrote {out} and registered it as model {name!r} (use --model {name})")
