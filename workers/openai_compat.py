"""The OpenAI-compatible endpoints in terms of instance jobs (`workers.inference`, job protocol
in `workers.instance.jobs`).

Each function takes the validated request body and returns the answer: a dict, or, for
``stream: true``, an iterator of each chunk's JSON bytes (the HTTP layer frames them as SSE).
Errors the client should hear are raised as `LmhostError` before anything is streamed.
Answers carry the request's ``model`` as their ``model``.

A request becomes one ``generate`` job: ``messages`` or ``prompt``, sampling fields as they
are, ``response_format`` as ``json_schema`` / ``json_object``, ``tools`` as function
definitions, ``logprobs`` as the number of alternatives wanted. The job's lines become
OpenAI's objects here; a streamed text chunk is written from a template made once per
stream (the hot path: one small ``json.loads`` and one ``json.dumps`` of the text per token).
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from functools import partial
from typing import Iterator

from workers.errors import LmhostError
from workers.inference import Inference, Reply
from workers.protocol import json_text, text_template

SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty",
            "frequency_penalty", "top_k", "min_p", "repeat_penalty")
FINISH = {"eos": "stop", "stop_string": "stop", "cancelled": "stop", "length": "length",
          "context": "length", "tool_calls": "tool_calls"}

Answer = dict | Iterator[bytes]
# the job's fields that an instance's error may name -> the request's
PARAMS = {"json_schema": "response_format", "json_object": "response_format",
          "grammar": "response_format"}


def _run(inference: Inference, body: dict, params: dict, ttl=None, direct=None) -> Reply:
    try:
        return inference.run(body["model"], "generate", params, stream=True, ttl=ttl,
                             direct=direct if body.get("stream") else None)
    except LmhostError as error:
        if error.param in PARAMS:
            error.message = error.message.replace(f"{error.param}:", f"{PARAMS[error.param]}:", 1)
            error.param = PARAMS[error.param]
        raise


def _sampling(body: dict) -> dict:
    params = {k: body[k] for k in SAMPLING if body.get(k) is not None}
    if isinstance(params.get("stop"), str):
        params["stop"] = [params["stop"]]
    return params


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def usage(done: dict) -> dict:
    return {"prompt_tokens": done["prompt_tokens"], "completion_tokens": done["completion_tokens"],
            "total_tokens": done["prompt_tokens"] + done["completion_tokens"]}


# -- chat ----------------------------------------------------------------------------------------

def chat_params(body: dict) -> dict:
    """The ``generate`` job of a chat completion request."""
    params = {"messages": body["messages"], **_sampling(body)}
    if body.get("max_completion_tokens") is not None:
        params["max_tokens"] = body["max_completion_tokens"]
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_object":
        params["json_object"] = True
    elif response_format.get("type") == "json_schema":
        params["json_schema"] = response_format["json_schema"].get("schema") or {}
    if body.get("tools"):
        params["tools"] = [tool["function"] for tool in body["tools"]]
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            choice = {"name": choice["function"]["name"]}
        if choice is not None:
            params["tool_choice"] = choice
        if body.get("parallel_tool_calls") is not None:
            params["parallel_tool_calls"] = body["parallel_tool_calls"]
    elif body.get("tool_choice") not in (None, "none", "auto"):
        params["tool_choice"] = body["tool_choice"]  # the instance says what is wrong
    if body.get("logprobs"):
        params["logprobs"] = body.get("top_logprobs") or 0
    return params


def chat(inference: Inference, body: dict, direct=None) -> Answer:
    """/v1/chat/completions, with the model's own chat template (from its GGUF). `direct`:
    how to hand the client's connection to the instance after the first text chunk
    (`app.sse.DirectText`), or None."""
    params = chat_params(body)
    reply = _run(inference, body, params, body.get("ttl"), direct)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": body["model"]}
    if body.get("stream"):
        return _chat_chunks(reply, head, bool((body.get("stream_options") or {})
                                              .get("include_usage")))
    answer = reply.collect()
    text, logprobs, calls, done = answer.text, answer.logprobs, answer.tool_calls, answer.done
    assistant = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        assistant["tool_calls"] = [_tool_call(call) for call in calls]
    choice = {"index": 0, "message": assistant,
              "logprobs": {"content": [_chat_logprob(e) for e in logprobs]} if body.get("logprobs") else None,
              "finish_reason": FINISH[done["stop"]]}
    return {**head, "object": "chat.completion", "choices": [choice], "usage": usage(done)}


def _tool_call(call: dict, index: int | None = None) -> dict:
    out = {"id": call["id"], "type": "function",
           "function": {"name": call["name"], "arguments": call["arguments"]}}
    return out if index is None else {"index": index, **out}


def _chat_logprob(entry: dict) -> dict:
    out = {"token": entry["token"], "logprob": entry["logprob"], "bytes": entry["bytes"],
           "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": t["bytes"]}
                            for t in entry.get("top", ())]}
    return out


def _chat_chunks(reply: Reply, head: dict, include_usage: bool) -> Iterator[bytes]:
    base = {**head, "object": "chat.completion.chunk"}

    def chunk(delta: dict, finish: str | None = None, logprobs=None) -> bytes:
        return _dumps({**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                            "finish_reason": finish}]})

    # a text chunk is this template around the JSON of its text
    template = text_template(lambda text: chunk({"content": text}))
    prefix, suffix = template
    messages = reply.messages(template)
    try:
        yield chunk({"role": "assistant", "content": ""})
        done = {}
        for message in messages:
            if "text" in message:
                if "logprobs" in message:
                    yield chunk({"content": message["text"]}, logprobs={
                        "content": [_chat_logprob(e) for e in message["logprobs"]]})
                else:
                    yield prefix + json_text(message["text"]) + suffix
            elif "tool_calls" in message:
                yield chunk({"tool_calls": [_tool_call(call, i)
                                            for i, call in enumerate(message["tool_calls"])]})
            elif "done" in message:
                done = message["done"]
        yield chunk({}, FINISH[done["stop"]])
        if include_usage:
            yield _dumps({**base, "choices": [], "usage": usage(done)})
    finally:
        messages.close()  # the client went away: this stops the generation


# -- completions ---------------------------------------------------------------------------------

def complete(inference: Inference, body: dict, direct=None) -> Answer:
    """/v1/completions. `prompt` may be a list: one choice per prompt, in order (each prompt
    is a job of its own; a stream relays them one after the other, choices renumbered).
    `direct`: as for `chat`."""
    params = _sampling(body)
    if body.get("logprobs") is not None:
        params["logprobs"] = body["logprobs"]
    prompts = [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]
    ttl = body.get("ttl")
    head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
            "created": int(time.time()), "model": body["model"]}
    echo = bool(body.get("echo"))
    # The first job runs now, so that an unknown model is an HTTP error, not a stream's.
    first = _run(inference, body, {**params, "prompt": prompts[0]}, ttl, direct)

    def replies():
        yield first
        for prompt in prompts[1:]:
            yield _run(inference, body, {**params, "prompt": prompt}, direct=direct)

    if body.get("stream"):
        return _completion_chunks(replies(), prompts, head, echo, body.get("logprobs") is not None,
                                  bool((body.get("stream_options") or {}).get("include_usage")))
    choices, total = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for index, reply in enumerate(replies()):
        answer = reply.collect()
        text = ([prompts[index]] if echo else []) + answer.text
        choices.append({"text": "".join(text), "index": index,
                        "logprobs": (_completion_logprobs(answer.logprobs)
                                     if "logprobs" in params else None),
                        "finish_reason": FINISH[answer.done["stop"]]})
        total = {k: total[k] + v for k, v in usage(answer.done).items()}
    return {**head, "choices": choices, "usage": total}


def _completion_logprobs(entries: list[dict], offset: int = 0) -> dict:
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [e["token"] for e in entries],
            "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top", ())} for e in entries],
            "text_offset": offsets}


def _completion_chunks(replies, prompts: list[str], head: dict, echo: bool, logprobs: bool,
                       include_usage: bool) -> Iterator[bytes]:
    def chunk(index: int, text: str, finish: str | None = None, lp=None) -> bytes:
        return _dumps({**head, "choices": [{"text": text, "index": index, "logprobs": lp,
                                            "finish_reason": finish}]})

    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for index, reply in enumerate(replies):
        template = text_template(partial(chunk, index))
        prefix, suffix = template
        messages = reply.messages(template)
        try:
            if echo:
                yield chunk(index, prompts[index])
            done, offset = {}, 0
            for message in messages:
                if "text" in message:
                    if logprobs:
                        yield chunk(index, message["text"], lp=_completion_logprobs(
                            message.get("logprobs", []), offset))
                        offset += len(message["text"])
                    else:
                        yield prefix + json_text(message["text"]) + suffix
                elif "done" in message:
                    done = message["done"]
            yield chunk(index, "", FINISH[done["stop"]])
            total = {k: total[k] + v for k, v in usage(done).items()}
        finally:
            messages.close()
    if include_usage:
        yield _dumps({**head, "choices": [], "usage": total})


# -- embeddings ----------------------------------------------------------------------------------

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
