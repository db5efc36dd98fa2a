"""`tunelab adapters`: trained adapters (run, bank, metrics, files), runs, and GGUF / Ollama exports."""

from __future__ import annotations

from pathlib import Path

import click

from tunelab.cli.app_context import AppContext, pass_app
from tunelab.cli.output import echo_json, json_option, limit_option
from tunelab.errors import TunelabError
from tunelab.runtime.adapters import GGUF_TYPES, AdapterService


@click.group("adapters", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List trained adapters (run, bank, metrics, files)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_adapters)


@command.command("list")
@limit_option
@json_option
@pass_app
def list_adapters(app: AppContext, limit: int | None, as_json: bool) -> None:
    """List trained adapters."""
    adapters = AdapterService(app.settings, app.conn).adapters(limit)
    if as_json:
        echo_json([adapter for adapter, _ in adapters])
        return
    if not adapters:
        click.echo("no adapters yet: train one with `tunelab train NAME --bank BANK`")
    for adapter, run in adapters:
        m = adapter.metrics
        loss = f"loss {m.get('first_loss') or 0:.3f}->{m.get('final_loss') or 0:.3f}" if m.get("final_loss") is not None else "loss -"
        click.echo(
            f"{adapter.name:<20} run {run.id:<4} bank {adapter.bank:<16} {m.get('steps', 0)} steps  {loss}  "
            f"{m.get('train_examples', 0)} examples  {run.train_seconds:.0f}s"
        )
        for label, path in [("peft", adapter.peft_dir), ("gguf", adapter.gguf_path), *adapter.exports.items()]:
            click.echo(f"    {label:<5} {path}")


@command.command("runs")
@limit_option
@json_option
@pass_app
def list_runs(app: AppContext, limit: int | None, as_json: bool) -> None:
    """List training runs with their status; `interrupted` = its process is gone (killed, power cut).

    Continue a stopped run with `--resume RUN`, start it over with `--restart RUN`, or delete it."""
    runs = AdapterService(app.settings, app.conn).training_runs(limit)
    if as_json:
        echo_json(runs)
        return
    for run in runs:
        last = run.loss_history[-1]["loss"] if run.loss_history else None
        loss = f"loss {last:.4f}" if last is not None else ""
        stopped = ""
        if run.status not in ("done", "running"):
            checkpoint = run.last_checkpoint
            stopped = f"  last checkpoint {checkpoint.name if checkpoint else '- (none: --restart it)'}"
        click.echo(
            f"{run.id:<4} {run.name:<20} {run.status:<11} step {run.step}/{run.total_steps}  bank {run.bank or '-'}  {run.device}  {loss}"
            + stopped
            + (f"  ({run.error})" if run.error and run.status != "done" else "")
        )


@command.command("delete")
@click.argument("name")
@pass_app
def delete(app: AppContext, name: str) -> None:
    """Delete NAME: an adapter, a reward model or an unfinished run, with its run and all its files.

    Works for SFT, KTO/DPO and reward runs alike; a run still training is refused."""
    removed = AdapterService(app.settings, app.conn).delete(name)
    click.echo(f"deleted {name!r}" + (f" and {len(removed)} file(s)/folder(s): {', '.join(map(str, removed))}" if removed else ""))


@command.command("export")
@click.argument("name")
@click.option(
    "--merged",
    "tensor_type",
    type=click.Choice(GGUF_TYPES),
    default=None,
    help="Write base + adapter as one standalone GGUF of this type.",
)
@click.option(
    "--ollama",
    "ollama_dir",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[DIR]",
    help="Write an Ollama model folder: the GGUF and a Modelfile (default DIR: ollama/ in the adapter's folder).",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="--merged only: output file (default: beside the adapter)."
)
@pass_app
def export(app: AppContext, name: str, tensor_type: str | None, ollama_dir: str | None, out: Path | None) -> None:
    """Export adapter NAME: merged into its base as a standalone GGUF (--merged), for Ollama (--ollama), or both."""
    service = AdapterService(app.settings, app.conn)
    if ollama_dir is not None:
        if out is not None:
            raise TunelabError("--out is for --merged alone: with --ollama the files go in the --ollama folder")
        done = service.export_ollama(name, Path(ollama_dir) if ollama_dir else None, tensor_type)
        for note in done.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"wrote {done.modelfile} and {done.weights}")
        click.echo(f"create the Ollama model: {done.create_command}")
        click.echo(f"then chat with it: ollama run {done.model_name}")
        return
    if tensor_type is None:
        raise TunelabError("give --merged TYPE (a standalone GGUF) and/or --ollama [DIR] (a Modelfile for Ollama)")
    out = service.export_merged(name, tensor_type, out)
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB); chat with it: tunelab chat --model {out} 'your prompt'")


@command.command("export-base")
@click.option("--model", "-m", default=None, help="Base GGUF (path or registered name); default: the chat model.")
@click.option("--type", "tensor_type", type=click.Choice(GGUF_TYPES), default="f16", help="Tensor type (default f16).")
@click.option("--name", default=None, help="Register the file as this model name (default: <model>-<type>).")
@pass_app
def export_base(app: AppContext, model: str | None, tensor_type: str, name: str | None) -> None:
    """Write the training weights as an unquantised GGUF: chat on exactly the weights adapters learn on."""
    out, name = AdapterService(app.settings, app.conn).export_base(model, tensor_type, name)
    click.echo(f"wrote {out} and registered it as model {name!r} (use --model {name})")
