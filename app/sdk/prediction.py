"""Inference over the SDK protocol, on the same engine as ``/v1`` (one ``generate`` job).

``llm``: channels ``predict`` (``respond``, ``respond_stream``, ``act``, Python's
``complete``) and ``completeRawText`` (TypeScript's ``complete``); RPCs ``tokenize``,
``countTokens``, ``applyPromptTemplate``. ``embedding``: RPCs ``embedString``, ``tokenize``,
``countTokens``. The model specifier names a loaded instance (as ``getModelInfo`` finds it);
the job goes to that instance.

A prediction's messages: ``promptProcessingProgress`` (0 to 1; 0 goes with the next report,
not while the prompt is evaluated, and not at all for a prompt evaluated in one batch:
`progress_held`), one ``fragment`` per text line of the job (fast lines merged into one by
the instance: ``gather``; for a client on this machine the second token waits
``LMHOST_SDK_FIRST_PAUSE_MS`` after the first), the ``toolCallGeneration*`` messages for each
tool call (``act()`` runs them), then ``success`` with the stats and the applied configs. A
``cancel`` from the client is passed to the instance, which stops before its next token;
``success`` then says ``userStopped``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from app.extensions import Engine
from app.sdk import loadconfig
from app.sdk.framing import SdkError
from app.sdk.models import ModelHandlers, _object
from app.sdk.predictconfig import job_params
from app.sdk.session import Channel
from workers.errors import LmhostError
from workers.inference import Target

STOP_REASONS = {"eos": "eosFound", "stop_string": "stopStringFound",
                "length": "maxPredictedTokensReached", "context": "contextLengthReached",
                "tool_calls": "toolCalls", "cancelled": "userStopped"}
# the job's fields an instance's error may name -> what the SDK calls them
KEYS = {"json_schema": "llm.prediction.structured", "gbnf": "llm.prediction.structured",
        "grammar": "llm.prediction.structured", "tools": "llm.prediction.tools",
        "tool_choice": "llm.prediction.toolChoice", "messages": "history", "prompt": "rawPrompt"}


class PredictionHandlers:
    def __init__(self, eng: Engine, models: ModelHandlers):
        self.eng = eng
        self.models = models  # the namespace's model handlers: they find instances

    def channels(self) -> dict:
        return {"predict": self.predict, "completeRawText": self.complete_raw_text}

    def rpc(self) -> dict:
        counting = {"tokenize": self.tokenize, "countTokens": self.count_tokens}
        if self.models.type == "embedding":
            return {**counting, "embedString": self.embed_string}
        return {**counting, "applyPromptTemplate": self.apply_prompt_template}

    # -- finding the instance -------------------------------------------------------------------

    def _instance(self, specifier) -> dict:
        row, query = self.models._find(specifier)
        if row is None:
            raise self.models._not_found(query, "No loaded model satisfies the query")
        return row

    # -- channels -------------------------------------------------------------------------------

    def predict(self, params, channel: Channel) -> None:
        params = _object(params, "predict")
        row = self._instance(params.get("modelSpecifier"))
        job, applied = job_params(params.get("predictionConfigStack"))
        job["messages"] = history_messages(params.get("history"), job.pop("system_prompt", None))
        self._generate(row, job, applied, channel)

    def complete_raw_text(self, params, channel: Channel) -> None:
        params = _object(params, "completeRawText")
        row = self._instance(params.get("modelSpecifier"))
        prompt = params.get("rawPrompt")
        if not isinstance(prompt, str):
            raise SdkError("rawPrompt: must be a string")
        job, applied = job_params(params.get("predictionConfigStack"))
        job.pop("system_prompt", None)
        job.pop("template", None)
        job.update(prompt=prompt, add_bos=False)  # the text as given, as the template would be
        self._generate(row, job, applied, channel)

    def _generate(self, row: dict, job: dict, applied: list[dict], channel: Channel) -> None:
        job["progress"] = True
        # the instance the specifier named: routed to as it is (no second look at the table)
        target = Target(row["type"], [row], row["id"])
        # fewer, larger fragments when tokens come fast: a client pays for each, and a client
        # on this machine pays with the model's cores, so it gets fewer still (README
        # "Performance"); only such a client waits after the first fragment, too
        settings, local = self.eng.settings, channel.session.local_client
        gather = (settings.sdk_local_fragment_ms if local else settings.sdk_fragment_ms) / 1000
        pause = settings.sdk_first_pause_ms / 1000 if local else 0
        reply = self._call(lambda: self.eng.inference.run(row["id"], "generate", job, stream=True,
                                                          target=target, gather=gather))
        channel.on_cancel = reply.cancel
        if channel.cancelled.is_set():  # before the hook was in place
            reply.cancel()
        done = {}
        messages = reply.messages()
        try:
            for message in progress_held(messages):
                if "text" in message:
                    channel.send({"type": "fragment", "fragment": {
                        "content": message["text"], "tokensCount": message["tokens"],
                        "containsDrafted": False, "reasoningType": "none",
                        "isStructural": False}})
                    if pause:
                        # the instance decodes the next token only once this loop asks for the
                        # next line (`Reply.messages`' first_written): until then llama.cpp's
                        # threads leave the cores to a client here to take the first fragment
                        time.sleep(pause)
                        pause = 0
                elif "prompt" in message:
                    channel.send(progress_message(message["prompt"]))
                elif "tool_calls" in message:
                    for call in message["tool_calls"]:
                        for sdk_message in tool_call_messages(call):
                            channel.send(sdk_message)
                elif "done" in message:
                    done = message["done"]
        except LmhostError as error:
            raise sdk_error(error) from None
        finally:
            messages.close()
        channel.send({"type": "success", "stats": stats(done),
                      "modelInfo": self.models._instance_info(row),
                      "loadModelConfig": {"fields": loadconfig.kv_fields(
                          self.models.type, row["load_config"])},
                      "predictionConfig": {"fields": applied}})

    @staticmethod
    def _call(work):
        try:
            return work()
        except LmhostError as error:
            raise sdk_error(error) from None

    # -- RPCs -----------------------------------------------------------------------------------

    def _ask(self, params, request: dict) -> dict:
        row = self._instance(_object(params, request["op"]).get("specifier"))
        return self._call(lambda: self.eng.inference.ask(row["id"], request))

    def tokenize(self, params) -> dict:
        text = _text(params, "inputString")
        return {"tokens": self._ask(params, {"op": "tokenize", "text": text, "add_bos": False})["tokens"]}

    def count_tokens(self, params) -> dict:
        return {"tokenCount": len(self.tokenize(params)["tokens"])}

    def apply_prompt_template(self, params) -> dict:
        params = _object(params, "applyPromptTemplate")
        job, _ = job_params(params.get("predictionConfigStack"))
        opts = params.get("opts") if isinstance(params.get("opts"), dict) else {}
        request = {"op": "template", "messages": history_messages(
            params.get("history"), job.get("system_prompt")), "template": job.get("template"),
            "tools": [t.get("function", t) for t in opts.get("toolDefinitions") or []
                      if isinstance(t, dict)]}
        return {"formatted": self._ask(params, request)["prompt"]}

    def embed_string(self, params) -> dict:
        params = _object(params, "embedString")
        text = _text(params, "inputString")
        row = self._instance(params.get("modelSpecifier"))
        result = self._call(lambda: self.eng.inference.run_all(row["id"], "embedding",
                                                               {"input": text}))
        return {"embedding": result["data"][0]["embedding"]}


def sdk_error(error: LmhostError) -> LmhostError | SdkError:
    """An engine error about a request field, naming the field as the SDK names it; others
    as they are (the namespace converts them: not found, ...)."""
    if error.param not in KEYS:
        return error
    message = error.message.replace(f"{error.param}:", f"{KEYS[error.param]}:", 1)
    if not message.startswith(KEYS[error.param]):
        message = f"{KEYS[error.param]}: {message}"
    return SdkError(message)


def _text(params, name: str) -> str:
    value = params.get(name) if isinstance(params, dict) else None
    if not isinstance(value, str):
        raise SdkError(f"{name}: must be a string")
    return value


def history_messages(history, system_prompt: str | None = None) -> list[dict]:
    """An SDK chat history as the job's (OpenAI-shaped) messages."""
    items = history.get("messages") if isinstance(history, dict) else None
    if not isinstance(items, list):
        raise SdkError("history: must be {\"messages\": [{\"role\", \"content\": [...]}]}")
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for item in items:
        role = item.get("role") if isinstance(item, dict) else None
        parts = item.get("content") if isinstance(item, dict) else None
        if role not in ("system", "user", "assistant", "tool") or not isinstance(parts, list):
            raise SdkError(f"history: a message needs a role (system, user, assistant, tool) "
                           f"and a list of content parts, got {item!r}")
        text, calls = [], []
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text.append(str(part.get("text", "")))
            elif kind == "toolCallRequest":
                request = part.get("toolCallRequest") or {}
                calls.append({"id": request.get("id") or "", "type": "function", "function": {
                    "name": request.get("name"),
                    "arguments": json.dumps(request.get("arguments") or {})}})
            elif kind == "toolCallResult":
                messages.append({"role": "tool", "tool_call_id": part.get("toolCallId"),
                                 "name": part.get("name"), "content": str(part.get("content", ""))})
            elif kind == "file":
                raise SdkError("history: files and images are not supported: lmhost serves "
                               "text models")
            else:
                raise SdkError(f"history: unknown content part {kind!r}")
        if role != "tool":
            message = {"role": role, "content": "".join(text)}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
    return messages


def progress_held(messages: Iterator[dict]) -> Iterator[dict]:
    """The instance's lines, its first prompt report (nothing processed yet) held back until
    the next line, and dropped when that is the last report (a prompt evaluated in one batch
    reports only its end, 1).

    Why: a client woken by a frame while the prompt is evaluated takes a core from it (the
    Python client handles every frame on two threads; with the 0 sent at once its first token
    came 5 ms later on 2 cores), and each frame before the first fragment costs it about 1 ms
    more. A report that starts above 0 is what both clients take as it is: the TypeScript
    client passes each report on, and the Python client makes up the missing 0 itself (and
    the 1 at the first fragment, "the server ... may skip actually sending" it). A longer
    prompt's 0 goes with its first batch's report, then one report per batch."""
    held, first = None, True
    for message in messages:
        if first and "prompt" in message:
            first, held = False, message
            continue
        if held is not None:
            if not _prompt_done(message):
                yield held
            held = None
        yield message
    if held is not None:
        yield held


def _prompt_done(message: dict) -> bool:
    prompt = message.get("prompt")
    return prompt is not None and prompt["processed"] >= prompt["tokens"]


def progress_message(prompt: dict) -> dict:
    total, cached, processed = prompt["tokens"], prompt["cached"], prompt["processed"]
    todo = total - cached
    return {"type": "promptProcessingProgress",
            "progress": (processed - cached) / todo if todo > 0 else 1.0,
            "details": {"cachedTokenCount": cached, "totalPromptTokenCount": total,
                        "processedPromptTokenCount": processed,
                        "unprocessedPromptTokenCount": total - processed}}


def tool_call_messages(call: dict) -> list[dict]:
    arguments = json.loads(call["arguments"])
    return [{"type": "toolCallGenerationStart", "toolCallId": call["id"]},
            {"type": "toolCallGenerationNameReceived", "name": call["name"]},
            {"type": "toolCallGenerationArgumentFragmentGenerated", "content": call["arguments"]},
            {"type": "toolCallGenerationEnd", "toolCallRequest": {
                "type": "function", "id": call["id"], "name": call["name"],
                "arguments": arguments if isinstance(arguments, dict) else {}}}]


def stats(done: dict) -> dict:
    out = {"stopReason": STOP_REASONS[done["stop"]],
           "tokensPerSecond": done["tokens_per_second"],
           "timeToFirstTokenSec": done["ttft"],
           "promptTokensCount": done["prompt_tokens"],
           "predictedTokensCount": done["completion_tokens"],
           "totalTokensCount": done["prompt_tokens"] + done["completion_tokens"]}
    if done.get("stop_string") is not None:
        out["stopString"] = done["stop_string"]
    return out
