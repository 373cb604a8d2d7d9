"""LM Studio's native chat, ``POST /api/v1/chat``, in terms of the engine: one ``generate``
job (`workers.instance.jobs`), with the same JIT load, TTL and errors as ``/v1``.

The chat is the stored one named by ``previous_response_id`` (`workers.responses`), then
``system_prompt`` (replacing a stored one), then ``input`` as the user's turn. The answer is
``{model_instance_id, output: [{"type": "message", "content"}], stats, response_id?}``; with
``stream: true`` the same comes as LM Studio's named events: ``chat.start``, ``model_load.*``
(when this request loads the model), ``prompt_processing.*``, ``message.*``, then ``chat.end``
with the answer; a failure midway is an ``error`` event, and ``chat.end`` still follows with
what was generated. Every event's data carries its ``type``.
"""

from __future__ import annotations

import json
from typing import Iterator

from workers import policy
from workers.errors import InvalidRequest, LmhostError, to_wire
from workers.inference import Inference, Target
from workers.protocol import text_template
from workers.responses import ResponseStore
from workers.table import TableUnreadable

SAMPLING = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
            "repeat_penalty": "repeat_penalty", "max_output_tokens": "max_tokens"}
# the job's fields an instance's error may name -> the request's
PARAMS = {"messages": "input", "max_tokens": "max_output_tokens"}

Event = tuple[str, bytes]


def _dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# a message.delta event's data is this prefix and suffix around its text as JSON
DELTA_TEMPLATE = text_template(lambda text: _dumps({"type": "message.delta", "content": text}))


class NativeChat:
    def __init__(self, inference: Inference, store: ResponseStore):
        self.inference = inference
        self.store = store

    def prepare(self, body: dict) -> tuple[list[dict], dict, Target]:
        """The chat so far with this turn, the job's params, and the model's instances. Raises
        what the client should hear before anything is streamed (unknown model first, as
        ``/v1`` does)."""
        model = body["model"]
        target = self.inference.target(model)
        self.inference.check_type(model, target, "generate")
        if body.get("reasoning") not in (None, "off"):
            raise InvalidRequest(f"reasoning: {model!r} has no reasoning setting; only \"off\" "
                                 "is accepted", param="reasoning")
        messages = (self.store.get(body["previous_response_id"])
                    if body.get("previous_response_id") else [])
        if body.get("system_prompt") is not None:
            messages = [m for m in messages if m["role"] != "system"]
            messages.insert(0, {"role": "system", "content": body["system_prompt"]})
        messages.append({"role": "user", "content": _input_text(body["input"])})
        params = {job: body[field] for field, job in SAMPLING.items() if body.get(field) is not None}
        return messages, params, target

    def chat(self, body: dict, direct=None) -> dict | Iterator[Event]:
        """`direct`: how to hand the client's connection to the instance after the first
        ``message.delta`` (`app.sse.DirectText` for those events), or None."""
        messages, params, target = self.prepare(body)
        if body.get("stream"):
            return self._events(body, messages, params, target, direct)
        load_time = None
        for message in self._load(body, target):
            if "result" in message:
                load_time = message["result"].get("load_time_seconds")
        reply = self._run(body, messages, params, target=target)
        answer = reply.collect()
        return self._result(body, messages, reply.instance_id, "".join(answer.text), answer.done,
                            load_time)

    # -- steps -------------------------------------------------------------------------------

    def _load(self, body: dict, target: Target) -> Iterator[dict]:
        if target.rows:
            return iter(())
        return self.inference.jit_events(body["model"], body.get("ttl"), body.get("context_length"))

    def _run(self, body: dict, messages: list[dict], params: dict, progress: bool = False,
             target: Target | None = None, direct=None):
        try:
            return self.inference.run(body["model"], "generate",
                                      {**params, "messages": messages, "progress": progress},
                                      stream=True, ttl=body.get("ttl"),
                                      target=target if target and target.rows else None,
                                      direct=direct)
        except LmhostError as error:
            if error.param in PARAMS:
                error.message = error.message.replace(f"{error.param}:", f"{PARAMS[error.param]}:", 1)
                error.param = PARAMS[error.param]
            raise

    def _result(self, body: dict, messages: list[dict], instance_id: str, text: str,
                done: dict, load_time: float | None, store: bool = True) -> dict:
        stats = {"input_tokens": done.get("prompt_tokens", 0),
                 "total_output_tokens": done.get("completion_tokens", 0),
                 "reasoning_output_tokens": 0,
                 "tokens_per_second": done.get("tokens_per_second", 0.0),
                 "time_to_first_token_seconds": done.get("ttft", 0.0)}
        if load_time is not None:
            stats["model_load_time_seconds"] = load_time
        result = {"model_instance_id": instance_id,
                  "output": [{"type": "message", "content": text}], "stats": stats}
        if store and body.get("store", True):
            result["response_id"] = self.store.put(
                [*messages, {"role": "assistant", "content": text}])
        return result

    def _events(self, body: dict, messages: list[dict], params: dict,
                 target: Target, direct) -> Iterator[Event]:
        instance_id, text, done, load_time = self._expected_instance(body, target), [], {}, None

        def event(name: str, **data) -> Event:
            return name, _dumps({"type": name, **data})

        yield event("chat.start", model_instance_id=instance_id)
        messages_iter, failed = None, False
        try:
            for i, message in enumerate(self._load(body, target)):
                if i == 0:
                    yield event("model_load.start", model_instance_id=instance_id)
                if "result" in message:
                    result = message["result"]
                    instance_id, load_time = result["instance_id"], result.get("load_time_seconds")
                    yield event("model_load.end", model_instance_id=instance_id,
                                load_time_seconds=load_time)
                elif message.get("progress") is not None:
                    yield event("model_load.progress", model_instance_id=instance_id,
                                progress=message["progress"])
            reply = self._run(body, messages, params, progress=True, target=target,
                              direct=direct)
            instance_id = reply.instance_id
            messages_iter = reply.messages(DELTA_TEMPLATE, event="message.delta")
            started = False
            for message in messages_iter:
                if "prompt" in message:
                    prompt = message["prompt"]
                    todo = prompt["tokens"] - prompt["cached"]
                    done_share = (prompt["processed"] - prompt["cached"]) / todo if todo else 1.0
                    if done_share == 0.0:
                        yield event("prompt_processing.start")
                    yield event("prompt_processing.progress", progress=done_share)
                    if done_share >= 1.0:
                        yield event("prompt_processing.end")
                elif "text" in message:
                    if not started:
                        started = True
                        yield event("message.start")
                    text.append(message["text"])
                    yield event("message.delta", content=message["text"])
                elif "done" in message:
                    done = message["done"]
                    text.append(done.get("handed_off", ""))
            if started:
                yield event("message.end")
        except LmhostError as error:
            failed = True
            yield "error", _dumps({"type": "error", "error": to_wire(error)})
        finally:
            if messages_iter is not None:
                messages_iter.close()  # the client went away: this stops the generation
        yield event("chat.end", result=self._result(body, messages, instance_id, "".join(text),
                                                    done, load_time, store=not failed))

    def _expected_instance(self, body: dict, target: Target) -> str:
        """The instance that will answer, for ``chat.start``: the one loaded (the first of
        several), or the identifier a JIT load will give."""
        if target.rows:
            return target.rows[0]["id"]
        try:
            taken = {r["id"] for r in self.inference.table.read()}
        except TableUnreadable:
            taken = set()
        return policy.default_identifier(body["model"], taken)


def _input_text(value) -> str:
    if isinstance(value, str):
        return value
    texts = []
    for item in value:
        if item.get("type") == "image":
            raise InvalidRequest("input: images are not supported: lmhost serves text models",
                                 param="input")
        texts.append(item["content"])
    return "\n".join(texts)
