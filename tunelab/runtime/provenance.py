"""The provenance record of a reply generated on the runtime, built the same way for every path."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tunelab.engine.remote import RemoteEngine
from tunelab.engine.sampling import SamplerParams
from tunelab.runtime.runtime import Runtime
from tunelab.stores.provenance import IclUse, Provenance, StepUse


def provenance_for(
    runtime: Runtime,
    adapter: str | None,
    scale: float,
    params: SamplerParams,
    icl: IclUse | None,
    prompt_messages: list[dict[str, str]] | None,
    arm: str | None = None,
    best_of: dict[str, Any] | None = None,
    steps: Sequence[StepUse] = (),
) -> Provenance:
    """What made a reply: the runtime's base model and `adapter` at `scale`, the sampler with the
    seed actually used, the ICL examples, the messages as sent and any intermediate calls; for a remote engine, its URL
    and the model id it answered with."""
    model_file = runtime.model_file
    remote = runtime.engine if runtime.remote else None
    assert remote is None or isinstance(remote, RemoteEngine)
    return Provenance(
        model_path=str(model_file) if model_file is not None else remote.base_model if remote else "",
        model_sha256=runtime.model_sha256,
        params=params.to_dict(),
        seed=params.seed,
        adapter=adapter,
        adapter_sha256=runtime.adapter_sha256(adapter),
        adapter_scale=scale if adapter else None,
        icl=icl,
        prompt_messages=prompt_messages,
        arm=arm,
        best_of=best_of,
        engine_url=remote.url if remote else None,
        server_model=remote.served_model if remote else None,
        steps=tuple(steps),
    )
