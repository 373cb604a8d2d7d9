"""The OpenAI-compatible endpoints in terms of instance jobs (`workers.inference`).

Each function takes the validated request body and returns the answer: a dict, or, for
``stream: true``, an iterator of each chunk's JSON bytes (the HTTP layer frames them as SSE).
Errors the client should hear are raised as `LmhostError` before anything is streamed.
Answers carry the request's ``model`` as their ``model``.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Iterator

from workers.inference import Inference

SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty",
            "frequency_penalty")

Answer = dict | Iterator[bytes]


def _sampling(body: dict) -> dict:
    return {k: body[k] for k in SAMPLING if body.get(k) is not None}


def chat(inference: Inference, body: dict) -> Answer:
    """/v1/chat/completions, with the model's own chat template (from its GGUF)."""
    params = {"messages": body["messages"], **_sampling(body)}
    if body.get("max_completion_tokens") is not None:
        params["max_tokens"] = body["max_completion_tokens"]
    return _answer(inference, body, "chat", params)


def complete(inference: Inference, body: dict) -> Answer:
    """/v1/completions. `prompt` may be a list: one choice per prompt, in order (each prompt
    is a job of its own; a stream relays them one after the other, choices renumbered)."""
    params = {**_sampling(body), "echo": body.get("echo", False)}
    prompts = [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]
    if len(prompts) == 1:
        return _answer(inference, body, "completion", {**params, "prompt": prompts[0]})
    model, ttl = body["model"], body.get("ttl")
    if body.get("stream"):
        # The first job runs now, so that an unknown model is an HTTP error, not a stream's.
        first = inference.run(model, "completion", {**params, "prompt": prompts[0]},
                              stream=True, ttl=ttl)
        return _renumbered_streams(inference, model, params, prompts, first)
    results = [inference.run_all(model, "completion", {**params, "prompt": prompt}, ttl=ttl)
               for prompt in prompts]
    answer = results[0]
    answer["choices"] = [dict(r["choices"][0], index=i) for i, r in enumerate(results)]
    answer["usage"] = {k: sum(r["usage"][k] for r in results) for k in answer["usage"]}
    return answer


def _renumbered_streams(inference, model, params, prompts, first) -> Iterator[bytes]:
    for index, prompt in enumerate(prompts):
        reply = first if index == 0 else inference.run(
            model, "completion", {**params, "prompt": prompt}, stream=True)
        for message in reply.messages():
            if "chunk" in message:
                for choice in message["chunk"].get("choices", []):
                    choice["index"] = index
                yield json.dumps(message["chunk"], separators=(",", ":")).encode()


def embed(inference: Inference, body: dict) -> dict:
    """/v1/embeddings: float lists, or with ``encoding_format: base64`` (what the openai client
    asks for by default) base64 of little-endian float32."""
    result = inference.run_all(body["model"], "embedding", {"input": body["input"]},
                               ttl=body.get("ttl"))
    if body.get("encoding_format") == "base64":
        for item in result["data"]:
            vector = item["embedding"]
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return result


def _answer(inference: Inference, body: dict, kind: str, params: dict) -> Answer:
    if body.get("stream"):
        return inference.run(body["model"], kind, params, stream=True,
                             ttl=body.get("ttl")).chunk_bytes()
    return inference.run_all(body["model"], kind, params, ttl=body.get("ttl"))
