"""Text generation on the instance's model: the one engine behind every wire (``/v1``,
``/api/v1/chat``, the SDK's ``predict``). The job lines it writes are documented in
`workers.instance.jobs`.

A generation is prepared in full before anything is sent (the prompt from the model's own chat
template or the request's, the grammar of structured output or tools, the sampler), so a
request that cannot be served gets one error line and nothing else. Then:

- the prompt is evaluated in batches of ``n_batch`` tokens, reusing the longest prefix already
  in the KV cache from the previous request; between batches it reports progress (when asked)
  and notices a cancel;
- tokens are sampled one by one with llama-cpp-python's own sampler chain (the same tokens
  as `Llama.create_completion` for the same seed). A grammar is checked on the token the chain
  picked, and only when it rejects it is the grammar applied to the whole vocabulary and the
  token sampled again (llama.cpp's common sampler does the same: applying a grammar to every
  candidate at every step costs several times the decode of a small model);
- text goes out as it is complete (UTF-8 sequences, stop strings held back while they may be
  starting), each line with its token count and, when asked, each token's log-probability;
- `cancelled` (set by the connection's reader in `server`: a cancel line, or the client gone)
  is checked before every token, so a cancelled generation stops within one token step.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from typing import Callable

import numpy as np

from workers.instance import structured
from workers.instance.structured import RequestError
from workers.instance.textstream import StopStrings, Utf8Pieces

# llama-cpp-python's defaults (Llama.create_completion), so a request that sets nothing
# samples as an in-process call would
SAMPLING_DEFAULTS = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05,
                     "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
MAX_TOP_LOGPROBS = 20
# for models whose GGUF has no chat template
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

Send = Callable[[dict], None]


class Engine:
    """One per instance process: the model, its chat template, and a cache of token texts."""

    def __init__(self, llm):
        import llama_cpp
        self._lib = llama_cpp
        self.llm = llm
        self.vocab = llm._model.vocab
        self.n_ctx = llm.n_ctx()
        self.n_vocab = llm.n_vocab()
        self.base_seed = llm._seed        # the load's seed, for requests that give none
        self._pieces: dict[int, bytes] = {}
        self._formatters: dict[tuple, object] = {}

    # -- text <-> tokens -----------------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self.llm._model.detokenize([token], special=False)
        return piece

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm._model.detokenize([token], special=True).decode("utf-8", "replace")

    def render(self, messages: list[dict], template: dict | None = None) -> tuple[str, bool]:
        """The chat as the model reads it, and whether the tokenizer should add BOS (a GGUF
        template writes its own). `template`: ``{"jinja", "bos_token", "eos_token"}`` from
        the request, instead of the model's."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        if template is not None:
            key = (template["jinja"], template.get("bos_token", ""), template.get("eos_token", ""))
        else:
            key = (self.llm.metadata.get("tokenizer.chat_template") or CHATML,
                   self._special_text(self.llm.token_bos()),
                   self._special_text(self.llm.token_eos()))
        formatter = self._formatters.get(key)
        try:
            if formatter is None:
                formatter = self._formatters[key] = Jinja2ChatFormatter(
                    key[0], eos_token=key[2], bos_token=key[1], add_generation_prompt=True)
            return formatter(messages=messages).prompt, False
        except Exception as exc:  # noqa: BLE001 - a template's own errors, for the client
            raise RequestError(f"the chat template cannot render these messages: {exc}",
                               "messages") from None

    def formatted(self, messages: list[dict], tools: list[dict], template: dict | None) -> str:
        """The chat as the model would read it (the SDK's ``applyPromptTemplate``)."""
        structured.tool_mode({"tools": tools})  # checks them
        return self.render(structured.chat_messages(messages, tools, None), template)[0]

    def prompt(self, params: dict, tools: list[dict], forced: str | None) -> list[int]:
        if params.get("messages") is not None:
            messages = structured.chat_messages(params["messages"], tools, forced)
            text, add_bos = self.render(messages, params.get("template"))
        else:
            text, add_bos = params.get("prompt") or "", params.get("add_bos", True)
        tokens = self.tokenize(text, add_bos=add_bos) if text else []
        if not tokens:
            bos = self.llm.token_bos()
            if bos < 0:
                raise RequestError("the prompt is empty", "prompt")
            tokens = [bos]
        if len(tokens) >= self.n_ctx:
            raise RequestError(f"the prompt is {len(tokens)} tokens long; the instance's "
                               f"context length is {self.n_ctx}",
                               "messages" if params.get("messages") is not None else "prompt")
        return tokens

    # -- one generation ------------------------------------------------------------------------

    def generate(self, params: dict, send: Send, cancelled: threading.Event) -> None:
        started = time.perf_counter()
        tools, forced = structured.tool_mode(params)
        grammar = structured.output_grammar(params)
        if tools and grammar is not None:
            raise RequestError("structured output and tools cannot be combined", "tools")
        if tools:
            grammar = structured.tool_grammar(tools, forced, params.get("parallel_tool_calls", True))
        tokens = self.prompt(params, tools, forced)
        top = params.get("logprobs")
        if top is not None and not 0 <= int(top) <= MAX_TOP_LOGPROBS:
            raise RequestError(f"logprobs: at most {MAX_TOP_LOGPROBS} alternatives", "logprobs")
        sampler = Sampler(self, {**SAMPLING_DEFAULTS, **{k: params[k] for k in SAMPLING_DEFAULTS
                                                         if params.get(k) is not None}},
                          params.get("seed"), grammar)
        try:
            Run(self, params, send, cancelled, sampler, tools, top, started).go(tokens)
        finally:
            sampler.close()


class Run:
    """The state of one generation, from prompt to its last line."""

    def __init__(self, engine: Engine, params: dict, send: Send, cancelled: threading.Event,
                 sampler: "Sampler", tools: list[dict], top: int | None, started: float):
        self.e, self.llm, self.send, self.cancelled = engine, engine.llm, send, cancelled
        self.sampler, self.started = sampler, started
        self.tool_output = structured.ToolOutput() if tools else None
        self.top = None if tools else top  # log-probabilities of raw JSON tokens mean nothing
        self.stops = StopStrings([] if tools else list(params.get("stop") or []))
        self.utf8 = Utf8Pieces()
        self.max_tokens = params.get("max_tokens")
        self.progress = bool(params.get("progress"))
        self.generated = 0
        self.unsent = 0            # tokens generated since the last text line
        self.first_sent: float | None = None

    def go(self, tokens: list[int]) -> None:
        cached = self._reuse_prefix(tokens)
        stop = self._eval_prompt(tokens, cached)
        prompt_done = time.perf_counter()
        stop_string = None
        if stop is None:
            stop, stop_string = self._sample()
        self._text(self.utf8.flush(), [])
        calls = []
        if self.tool_output is not None:
            text, calls = self.tool_output.finish()
            self._text(text, [], raw=True)
            if calls:
                self.send({"tool_calls": calls})
                stop = "tool_calls"
        else:
            self._text(self.stops.flush(), [], raw=True)
        ended = time.perf_counter()
        seconds = ended - prompt_done
        done = {"stop": stop, "prompt_tokens": len(tokens), "cached_tokens": cached,
                "completion_tokens": self.generated,
                "ttft": (self.first_sent or ended) - self.started,
                "seconds": ended - self.started,
                "tokens_per_second": self.generated / seconds if seconds > 0 else 0.0}
        if stop_string is not None:
            done["stop_string"] = stop_string
        self.send({"done": done})

    def _reuse_prefix(self, tokens: list[int]) -> int:
        """Keep the KV cache's longest common prefix with `tokens`, less one token at least (its
        logits must be fresh to sample from); returns how many tokens are reused."""
        llm = self.llm
        cached = llm._input_ids[:llm.n_tokens].tolist() if llm.n_tokens else []
        same = 0
        for a, b in zip(cached, tokens):
            if a != b:
                break
            same += 1
        reuse = min(same, len(tokens) - 1)
        if reuse > 0 and llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
            llm.n_tokens = reuse
        else:
            llm.reset()
            reuse = 0
        return reuse

    def _eval_prompt(self, tokens: list[int], cached: int) -> str | None:
        total, batch = len(tokens), max(1, self.llm.n_batch)
        if self.progress:
            self.send({"prompt": {"tokens": total, "cached": cached, "processed": cached}})
        for at in range(cached, total, batch):
            if self.cancelled.is_set():
                return "cancelled"
            self.llm.eval(tokens[at:at + batch])
            if self.progress:
                self.send({"prompt": {"tokens": total, "cached": cached,
                                      "processed": min(total, at + batch)}})
        return None

    def _sample(self) -> tuple[str, str | None]:
        llm, e, lib = self.llm, self.e, self.e._lib
        if self.max_tokens is not None and self.max_tokens < 1:
            return "length", None
        while True:
            if self.cancelled.is_set():
                return "cancelled", None
            token, make_entry = self.sampler.sample(self.top)
            if lib.llama_vocab_is_eog(e.vocab, token):
                return "eos", None
            self.generated += 1
            self.unsent += 1
            piece = e.piece(token)
            text = self.utf8.feed(piece)
            found = None
            if self.tool_output is not None:
                text = self.tool_output.feed(text)
            else:
                text, found = self.stops.feed(text)
            self._text(text, [make_entry(piece)] if make_entry is not None else [])
            if found is not None:
                return "stop_string", found
            # decided before the next decode, which the last token does not need
            if self.max_tokens is not None and self.generated >= self.max_tokens:
                return "length", None
            if llm.n_tokens + 1 >= e.n_ctx:
                return "context", None
            llm.eval([token])

    def _text(self, text: str, logprobs: list, raw: bool = False) -> None:
        """A text line (with the tokens since the last one), if there is something to say."""
        if not text and not logprobs:
            return
        line = {"text": text, "tokens": self.unsent}
        if logprobs:
            line["logprobs"] = logprobs
        self.unsent = 0
        if self.first_sent is None:
            self.first_sent = time.perf_counter()
        self.send(line)


class Sampler:
    """llama-cpp-python's sampler chain, plus a grammar checked on the chain's pick first."""

    def __init__(self, engine: Engine, sampling: dict, seed: int | None, grammar: str | None):
        self.e, lib = engine, engine._lib
        self.lib = lib
        llm = engine.llm
        saved = llm._seed
        llm._seed = engine.base_seed if seed is None else int(seed) & 0xFFFFFFFF
        try:
            self.chain = llm._init_sampler(
                top_k=int(sampling["top_k"]), top_p=sampling["top_p"], min_p=sampling["min_p"],
                temp=sampling["temperature"], repeat_penalty=sampling["repeat_penalty"],
                frequency_penalty=sampling["frequency_penalty"],
                presence_penalty=sampling["presence_penalty"])
        finally:
            llm._seed = saved
        self.grammar = None
        if grammar is not None:
            self.grammar = lib.llama_sampler_init_grammar(engine.vocab, grammar.encode(), b"root")
            if not self.grammar:
                self.chain.close()
                raise RequestError("llama.cpp cannot compile the grammar of this request "
                                   "(its log says why)", "grammar")
        self._one = (lib.llama_token_data * 1)()
        self._all = None

    def close(self) -> None:
        if self.grammar:
            self.lib.llama_sampler_free(self.grammar)
            self.grammar = None
        self.chain.close()

    def _logits(self) -> np.ndarray:
        pointer = self.lib.llama_get_logits_ith(self.e.llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.e.n_vocab,))

    def sample(self, top: int | None):
        """The next token, and (when `top` is not None) a function that makes its
        log-probability entry from its text bytes."""
        lib, ctx = self.lib, self.e.llm._ctx.ctx
        logprobs = None
        if top is not None:
            logits = self._logits().astype(np.float64)  # before the sampler changes anything
            peak = logits.max()
            logprobs = logits - (peak + math.log(np.exp(logits - peak).sum()))
        token = lib.llama_sampler_sample(self.chain.sampler, ctx, -1)
        if self.grammar:
            token = self._grammar_checked(token)
        if logprobs is None:
            return token, None
        return token, lambda piece: self._entry(token, piece, logprobs, top)

    def _grammar_checked(self, token: int) -> int:
        """`token` if the grammar allows it, else the chain's pick among what it allows. The
        grammar accepts every token but an end of generation (accepting one before the
        grammar is complete aborts llama.cpp; generation ends there anyway)."""
        lib = self.lib
        if not self._allowed(token):
            token = self._resample()
        if not lib.llama_vocab_is_eog(self.e.vocab, token):
            lib.llama_sampler_accept(self.grammar, token)
        return token

    def _resample(self) -> int:
        lib = self.lib
        # rejected: every candidate through the grammar, then the chain picks again
        n = self.e.n_vocab
        if self._all is None:
            self._all = (lib.llama_token_data * n)()
            self._all_np = np.ctypeslib.as_array(self._all)
        self._all_np["id"] = np.arange(n, dtype=np.int32)
        self._all_np["logit"] = self._logits()
        self._all_np["p"] = 0.0
        array = lib.llama_token_data_array(data=self._all, size=n, selected=-1, sorted=False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
        lib.llama_sampler_apply(self.chain.sampler, ctypes.byref(array))
        return array.data[array.selected].id

    def _allowed(self, token: int) -> bool:
        one = self._one[0]
        one.id, one.logit, one.p = token, 1.0, 0.0
        array = self.lib.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        self.lib.llama_sampler_apply(self.grammar, ctypes.byref(array))
        return self._one[0].logit != -math.inf

    def _entry(self, token: int, piece: bytes, logprobs: np.ndarray, top: int) -> dict:
        entry = {"token": piece.decode("utf-8", "replace"), "logprob": float(logprobs[token]),
                 "bytes": list(piece)}
        if top:
            best = np.argpartition(-logprobs, top)[:top]
            best = best[np.argsort(-logprobs[best])]
            entry["top"] = [{"token": self.e.piece(int(t)).decode("utf-8", "replace"),
                             "logprob": float(logprobs[t]), "bytes": list(self.e.piece(int(t)))}
                            for t in best]
        return entry
