"""Load config: what a load request asks for -> what llama-cpp-python gets, and what is echoed.

`LoadPlan.load_config` is what was applied: seed 000's fields for the model type, plus
``gpu_offload`` and ``seed`` when the request set them (the REST schemas echo what they
document; the SDK's ``getLoadConfig`` reports them all).

Pure functions (DESIGN.md "Load config -> llama.cpp"). The HTTP schema has already checked types
and ranges; here are the checks that need the model: `num_experts` only 1..expert_count of an
MoE model (llama.cpp aborts the whole process otherwise) and ignored for dense models, a context
length within the model's trained context, LLM-only fields ignored for embedding models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from workers.catalog import Model, Variant
from workers.errors import InvalidRequest, ModelLoadFailed
from workers.estimate import Estimate, estimate_load

DEFAULT_EVAL_BATCH_SIZE = 512
DEFAULT_FLASH_ATTENTION = False
DEFAULT_OFFLOAD_KV_CACHE = True


@dataclass(frozen=True)
class LoadPlan:
    model_key: str
    variant: str
    path: str               # the file llama.cpp opens (first part of a split set)
    type: str               # "llm" | "embedding"
    llama_kwargs: dict      # keyword arguments of llama_cpp.Llama, JSON-able
    load_config: dict       # what was applied, as seed 000 echoes it for this model type
    estimate: Estimate      # its memory, on a host with the GPUs plan_load was told of

    def mapped(self) -> LoadPlan:
        """This plan with its weights mapped from the file (llama.cpp's default) rather than
        read into huge pages (`workers.hugepages`): pages the kernel can drop under memory
        pressure and read again. The estimate stays the one admission decided with, which fits:
        the process still has malloc's huge-page advice for its other buffers."""
        kwargs = {k: v for k, v in self.llama_kwargs.items() if k != "use_mmap"}
        return dataclasses.replace(self, llama_kwargs=kwargs)


def _gpu_layers(gpu_offload, block_count: int | None) -> int:
    if gpu_offload in (None, "max"):
        return -1
    if gpu_offload == "off":
        return 0
    return round(float(gpu_offload) * (block_count or 0))


def plan_load(request: dict, model: Model, variant: Variant, *, default_context_length: int,
              n_threads: int, gpus: int = 0, huge_pages: bool = False) -> LoadPlan:
    """The load `request` asks for, checked against the model; `gpus`: GPUs on this host
    (0: CPU mode), for the estimate; `huge_pages`: read the weights into memory of the
    instance's own rather than map the file (`workers.hugepages.weights_in_huge_pages`)."""
    if model.format != "gguf":
        raise ModelLoadFailed(f"{model.key} is an {model.format.upper()} model: lmhost runs GGUF "
                              "models with llama.cpp and cannot load it", param="model")
    facts = variant.facts
    trained = facts.context_length
    n_ctx = request.get("context_length")
    if n_ctx is None:
        n_ctx = min(default_context_length, trained) if trained else default_context_length
    elif trained and n_ctx > trained:
        raise InvalidRequest(f"context_length: {n_ctx} exceeds the model's trained context "
                             f"length {trained}", param="context_length")

    kwargs = {
        "model_path": str(variant.files[0]),
        "n_ctx": n_ctx,
        "n_threads": n_threads,
        "n_threads_batch": n_threads,
        "n_gpu_layers": _gpu_layers(request.get("gpu_offload"), facts.block_count),
        "verbose": True,  # llama.cpp's reasons for a failed load only reach stderr this way
    }
    if huge_pages:
        kwargs["use_mmap"] = False
    applied = {"context_length": n_ctx}
    if request.get("gpu_offload") is not None:
        applied["gpu_offload"] = request["gpu_offload"]
    if model.type == "embedding":
        kwargs["embedding"] = True
    else:
        n_batch = request.get("eval_batch_size") or DEFAULT_EVAL_BATCH_SIZE
        flash = request.get("flash_attention")
        offload_kv = request.get("offload_kv_cache_to_gpu")
        kwargs["n_batch"] = n_batch
        kwargs["flash_attn"] = DEFAULT_FLASH_ATTENTION if flash is None else flash
        kwargs["offload_kqv"] = DEFAULT_OFFLOAD_KV_CACHE if offload_kv is None else offload_kv
        applied.update(eval_batch_size=n_batch, flash_attention=kwargs["flash_attn"],
                       offload_kv_cache_to_gpu=kwargs["offload_kqv"])
        if request.get("seed") is not None:  # llama.cpp's sampling seed for this instance
            kwargs["seed"] = applied["seed"] = int(request["seed"])
        experts = request.get("num_experts")
        if facts.expert_count:  # MoE
            if experts is not None:
                if not 1 <= experts <= facts.expert_count:
                    raise InvalidRequest(
                        f"num_experts: must be between 1 and {facts.expert_count} "
                        f"(the model's expert count), got {experts}", param="num_experts")
                # llama.cpp takes only a Python int here (NOTES.md)
                kwargs["kv_overrides"] = {f"{facts.architecture}.expert_used_count": int(experts)}
            applied["num_experts"] = experts if experts is not None else facts.expert_used_count
    return LoadPlan(
        model_key=model.key,
        variant=variant.name,
        path=str(variant.files[0]),
        type=model.type,
        llama_kwargs=kwargs,
        load_config=applied,
        estimate=estimate_load(facts, kwargs, gpus),
    )
