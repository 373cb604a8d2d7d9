"""A load's memory, estimated before anything is spawned: from the file's facts (its GGUF
header and tensor table, `workers.model_facts`) and the llama.cpp parameters of its load plan.
Pure; `workers.admission` decides with it, and the instance's row keeps it next to what was
measured after the load.

The parts, each split between RAM and the GPUs:

- **weights**: the tensor data. With ``n_gpu_layers`` = k, llama.cpp puts the last k layers
  on the GPU, and the output layer too when every layer is there; ``token_embd`` stays in
  RAM. (The same bytes whether the instance read them into memory of its own, as on a CPU
  host with huge pages, `workers.hugepages`, or mapped the file, where they show in the RSS
  as file pages.)
- **kv_cache**: ``n_ctx × n_layer × (n_embd_k_gqa + n_embd_v_gqa) × bytes per element`` of
  the cache type (F16 unless ``type_k``/``type_v`` say otherwise), each layer's share where
  the layer is (``offload_kqv``). Encoder-only models (BERT) have none.
- **compute**: llama.cpp's scratch for one micro-batch of ``n_ubatch`` tokens. Its largest
  phase: attention (``n_ubatch × n_ctx`` scores per head, plus the F16 copy of them that the
  matmul makes, on a CPU and on a GPU alike), the feed-forward block, or the logits. On a GPU
  the whole reserved buffer is allocated; on a CPU only what a phase touches becomes
  resident, and the logits phase writes a single row unless ``logits_all``. With part of the
  layers on a GPU (none counts: a GPU host), llama.cpp runs a batch of 32 tokens or more on
  the GPU, the layers left in RAM included (op offload), so RAM only ever holds the scratch of
  a batch under 32 tokens and the GPU a whole micro-batch's.
- **overhead**: the instance process (Python with llama_cpp imported, llama.cpp's context,
  the tokenizer's tables) in RAM, and with the weights in huge pages what 2 MiB steps add; on
  a GPU host also the CUDA runtime's host memory (RAM) and, on each GPU, a CUDA context with
  the kernels and cuBLAS that the first decode loads.

The CPU constants are measured on this project's machine, the GPU ones on an NVIDIA H200 with
llama-cpp-python built with CUDA, both against the peak (RSS; NVML's memory of the process)
of an instance that filled its context (`bench/estimate_accuracy.py`, ``--gpu`` there).
"""

from __future__ import annotations

from dataclasses import dataclass

from workers import quantization
from workers.model_facts import ENCODER_ARCHITECTURES, FileFacts

MiB = 1 << 20
PROCESS_BYTES = 49 * MiB          # an idle instance process: Python + llama_cpp (RSS, measured)
CONTEXT_BYTES = 7 * MiB           # llama.cpp's context and output buffers, libraries paged in
TOKEN_BYTES = 190                 # tokenizer tables, per vocabulary entry
MERGE_BYTES = 175                 # per BPE merge
# On a GPU (H200, CUDA 13, bench/estimate_accuracy.py --gpu): a process holds ~520 MiB as soon
# as llama.cpp has a context there, and 100-190 MiB more after its first decode (kernels loaded
# lazily, cuBLAS's workspace); the CUDA runtime adds ~420-490 MiB to its RSS.
CUDA_CONTEXT_BYTES = 690 * MiB    # per process and GPU
CUDA_HOST_BYTES = 450 * MiB       # per process on a GPU host, in RAM
UBATCH = 512                      # llama-cpp-python's n_ubatch (capped by n_batch)
# llama.cpp's CUDA backend takes the ops of a batch this large or larger, weights in RAM or not
# (op offload; GGML_OP_OFFLOAD_MIN_BATCH): with partial offload the CPU computes smaller ones.
OP_OFFLOAD_BATCH = 32
# Weights in huge pages (`use_mmap=False` on a CPU host, workers.hugepages): memory that
# llama.cpp touches only in part (its compute buffers, the KV cache as it fills) becomes resident
# in 2 MiB steps, and malloc's heap grows by them. Measured on this project's machine against
# the same loads mapped (bench/estimate_accuracy.py and --mapped): the peak RSS was 1-12 MiB
# higher, about 6 % of the KV cache and compute buffers plus a couple of MiB.
HUGE_PAGE_HEAP_BYTES = 2 * MiB
HUGE_PAGE_SHARE = 0.06
F32, F16 = 4, 2
PARTS = ("weights", "kv_cache", "compute", "overhead")


@dataclass(frozen=True)
class Estimate:
    """Bytes by part, in RAM and on the GPUs (all GPUs together)."""

    ram: dict[str, int]
    gpu: dict[str, int]

    @property
    def ram_bytes(self) -> int:
        return sum(self.ram.values())

    @property
    def gpu_bytes(self) -> int:
        return sum(self.gpu.values())

    @property
    def total_bytes(self) -> int:
        return self.ram_bytes + self.gpu_bytes

    def to_json(self) -> dict:
        """The estimate as the API and the instance table show it."""
        body = {f"{part}_bytes": self.ram[part] + self.gpu[part] for part in PARTS}
        body.update(total_bytes=self.total_bytes, ram_bytes=self.ram_bytes,
                    gpu_bytes=self.gpu_bytes,
                    on_gpu={f"{part}_bytes": self.gpu[part] for part in PARTS})
        return body


def need(body: dict | None) -> dict[str, int]:
    """Bytes per memory pool ("ram", "gpu") of an estimate as `Estimate.to_json` wrote it."""
    body = body or {}
    return {"ram": int(body.get("ram_bytes", 0)), "gpu": int(body.get("gpu_bytes", 0))}


def _offloaded_layers(n_gpu_layers: int, n_layer: int) -> int:
    """Layers on the GPU, counting the output layer as layer n_layer (llama.cpp's count):
    -1 or more than n_layer means all of them and the output."""
    if n_gpu_layers < 0 or n_gpu_layers > n_layer:
        return n_layer + 1
    return n_gpu_layers


def estimate_load(facts: FileFacts, llama_kwargs: dict, gpus: int = 0) -> Estimate:
    """What loading the file with `llama_kwargs` (`LoadPlan.llama_kwargs`) will take, on a host
    with `gpus` GPUs (0: CPU mode, everything in RAM)."""
    kw = llama_kwargs
    n_ctx = int(kw["n_ctx"])
    encoder = facts.architecture in ENCODER_ARCHITECTURES
    n_ubatch = min(n_ctx, int(kw.get("n_batch") or UBATCH), UBATCH)
    layers = facts.layer_bytes
    n_layer = facts.block_count or len(layers)
    n_embd = facts.embedding_length or 0
    n_head = facts.head_count or 1
    n_head_kv = facts.head_count_kv or n_head
    head_k = facts.key_length or n_embd // n_head
    head_v = facts.value_length or head_k
    vocab = facts.vocab_size or 0
    offloaded = _offloaded_layers(int(kw.get("n_gpu_layers", -1)), n_layer) if gpus else 0
    on_gpu = min(offloaded, n_layer)  # repeating layers on the GPU: the last ones
    output_on_gpu = offloaded > n_layer

    weights_gpu = sum(layers[len(layers) - on_gpu:]) if on_gpu else 0
    tied = 0  # a tied output layer on the GPU is a copy of token_embd, which stays in RAM
    if output_on_gpu:
        tied = facts.token_embd_bytes if facts.output_tied and not encoder else 0
        weights_gpu += facts.output_bytes + tied
    weights_ram = facts.tensor_bytes - weights_gpu + tied

    per_layer_kv = 0 if encoder else n_ctx * n_head_kv * (
        head_k * quantization.bytes_per_element(kw.get("type_k", 1))
        + head_v * quantization.bytes_per_element(kw.get("type_v", 1)))
    kv_layers_gpu = on_gpu if kw.get("offload_kqv", True) else 0
    kv_gpu = int(per_layer_kv * kv_layers_gpu)
    kv_ram = int(per_layer_kv * (n_layer - kv_layers_gpu))

    compute_ram, compute_gpu = _compute(facts, kw, encoder, n_ctx, n_ubatch, n_embd, n_head,
                                        vocab, gpus, on_gpu, output_on_gpu, n_layer)
    overhead_ram = (PROCESS_BYTES + CONTEXT_BYTES + TOKEN_BYTES * vocab + MERGE_BYTES * facts.merges
                    + (CUDA_HOST_BYTES if gpus else 0))
    if kw.get("use_mmap", True) is False:  # read into huge pages: resident in 2 MiB steps
        overhead_ram += HUGE_PAGE_HEAP_BYTES + int(HUGE_PAGE_SHARE * (kv_ram + compute_ram))
    overhead_gpu = CUDA_CONTEXT_BYTES * gpus
    return Estimate(
        ram={"weights": weights_ram, "kv_cache": kv_ram, "compute": compute_ram,
             "overhead": overhead_ram},
        gpu={"weights": weights_gpu, "kv_cache": kv_gpu, "compute": compute_gpu,
             "overhead": overhead_gpu})


def _compute(facts: FileFacts, kw: dict, encoder: bool, n_ctx: int, n_ubatch: int, n_embd: int,
             n_head: int, vocab: int, gpus: int, on_gpu: int, output_on_gpu: bool,
             n_layer: int) -> tuple[int, int]:
    """(RAM, GPU) bytes of llama.cpp's compute buffers for one micro-batch."""
    n_kv = n_ubatch if encoder else n_ctx  # the cells a token attends to
    experts = (kw.get("kv_overrides") or {}).get(f"{facts.architecture}.expert_used_count")
    n_ff = (facts.feed_forward_length or 4 * n_embd) * (experts or facts.expert_used_count or 1)
    flash = bool(kw.get("flash_attn"))

    def phases(n_tokens: int) -> tuple[int, int, int]:
        """(attention with the F16 copy of its scores, feed-forward, logits) for a batch."""
        attention = 0 if flash else (F32 * n_tokens * (n_kv * (n_head + 1) + 6 * n_embd)
                                     + F16 * n_tokens * n_kv * n_head)
        ffn = F32 * n_tokens * (2 * n_ff + 8 * n_embd) + F16 * n_tokens * n_kv
        logits = 0 if encoder else F32 * n_tokens * (vocab + 2 * n_embd) + F16 * n_tokens * n_kv
        return attention, ffn, logits

    def cpu(n_tokens: int) -> int:
        attention, ffn, logits = phases(n_tokens)
        if kw.get("logits_all"):  # every row written, and llama-cpp-python keeps them all
            return max(attention, ffn, logits) + F32 * n_ctx * vocab
        return max(attention, ffn)

    if not gpus:
        return cpu(n_ubatch), 0
    # On a GPU host even no layer on the GPU is "partial": op offload still runs large batches
    # there (llama.cpp's source; not measured with 0 layers)
    attention, ffn, logits = phases(n_ubatch)
    gpu = max(attention, ffn, logits if output_on_gpu else 0)
    if on_gpu >= n_layer:  # every layer on the GPU: RAM keeps the input embeddings' scratch
        return F32 * n_ubatch * n_embd * 2, gpu
    return cpu(min(n_ubatch, OP_OFFLOAD_BATCH - 1)), gpu
