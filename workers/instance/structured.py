"""Structured output and tool calls, as grammars and prompts: pure helpers of `generation`.

Structured output: a JSON schema (or "any JSON object", or a GBNF grammar as given) becomes a
GBNF grammar (llama-cpp-python's port of llama.cpp's converter), which the sampler enforces:
the output always parses, and validates against the schema.

Tools use one protocol for every model, whatever its chat template knows: the tools and the
answer format go in a system message, and a grammar holds the output to one JSON object,
``{"tool_calls": [{"name", "arguments"}, ...]}`` or (``tool_choice: auto``)
``{"response": "..."}``. So ``required`` or a named function always yields a valid call, even on
a model trained without tools. Earlier calls and tool results are written back into the chat
in that same format (assistant JSON; results as user messages), which any template can render.
`ToolOutput` reads the output as it is generated: the response's text as it comes, the calls
at the end.
"""

from __future__ import annotations

import json
import re
import uuid

MAX_REPETITION = 4096          # the largest {m,n} a grammar may ask llama.cpp to expand
MAX_GRAMMAR_BYTES = 256 * 1024
_REPETITION = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class RequestError(ValueError):
    """A request the instance cannot serve as asked (400 `invalid_request`); `param` names the
    field at fault, as the wire calls it where it can."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# -- grammars ------------------------------------------------------------------------------------

def schema_grammar(schema, param: str) -> str:
    """GBNF for a JSON schema; a schema the converter cannot handle is a `RequestError`."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf
    if not isinstance(schema, (dict, bool)):
        raise RequestError(f"{param}: a JSON schema must be an object", param)
    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise RequestError(f"{param}: the JSON schema is nested too deeply", param) from None
    except Exception as exc:  # noqa: BLE001 - the converter raises anything on odd schemas
        raise RequestError(f"{param}: this JSON schema cannot be turned into a grammar: "
                           f"{type(exc).__name__}: {exc}", param) from None
    return checked(grammar, param)


def checked(grammar: str, param: str) -> str:
    """The grammar, if llama.cpp can expand it in bounded memory (repetitions are unrolled)."""
    if not isinstance(grammar, str) or not grammar.strip():
        raise RequestError(f"{param}: the grammar is empty", param)
    if len(grammar.encode()) > MAX_GRAMMAR_BYTES:
        raise RequestError(f"{param}: the grammar is larger than {MAX_GRAMMAR_BYTES} bytes", param)
    for match in _REPETITION.finditer(grammar):
        for bound in match.groups():
            if bound and int(bound) > MAX_REPETITION:
                raise RequestError(f"{param}: a repetition of {bound} is more than lmhost lets "
                                   f"llama.cpp unroll ({MAX_REPETITION}); bound minLength, "
                                   "maxLength, minItems and maxItems lower", param)
    return grammar


def output_grammar(params: dict) -> str | None:
    """The grammar of a request's structured output: ``json_schema``, ``json_object`` or
    ``gbnf`` (at most one), or None."""
    given = [k for k in ("json_schema", "json_object", "gbnf") if params.get(k) not in (None, False)]
    if len(given) > 1:
        raise RequestError(f"give one of {', '.join(given)}", given[1])
    if not given:
        return None
    if given[0] == "json_schema":
        return schema_grammar(params["json_schema"], "json_schema")
    if given[0] == "json_object":
        return schema_grammar({"type": "object"}, "json_object")
    return checked(params["gbnf"], "gbnf")


# -- tools -------------------------------------------------------------------------------------

def tool_mode(params: dict) -> tuple[list[dict], str | None]:
    """(the tools in play, the function the call must name or None). No tools in play when
    none are given or ``tool_choice`` is ``none``."""
    tools = params.get("tools") or []
    choice = params.get("tool_choice") or "auto"
    names = []
    for i, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not _NAME.match(name):
            raise RequestError(f"tools[{i}]: a function name is 1 to 64 letters, digits, "
                               "'_', '.' or '-'", "tools")
        if name in names:
            raise RequestError(f"tools[{i}]: the function name {name!r} is given twice", "tools")
        names.append(name)
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise RequestError(f"tools[{i}].parameters: must be a JSON schema object", "tools")
    if choice == "none" or not tools:
        if isinstance(choice, dict) or choice == "required":
            raise RequestError("tool_choice: no tools are given", "tool_choice")
        return [], None
    if isinstance(choice, dict):
        if choice.get("name") not in names:
            raise RequestError(f"tool_choice: no tool is named {choice.get('name')!r}",
                               "tool_choice")
        return [t for t in tools if t["name"] == choice["name"]], choice["name"]
    if choice not in ("auto", "required"):
        raise RequestError("tool_choice: must be none, auto, required or name a function",
                           "tool_choice")
    return tools, (None if choice == "auto" else "")


def tool_grammar(tools: list[dict], forced: str | None, parallel: bool) -> str:
    """`forced`: None (the model may answer instead: ``auto``), "" (some call), or a name."""
    calls = []
    for tool in tools:
        calls.append({"type": "object", "required": ["name", "arguments"], "properties": {
            "name": {"const": tool["name"]},
            "arguments": tool.get("parameters") or {"type": "object"}}})
    items = calls[0] if len(calls) == 1 else {"anyOf": calls}
    array = {"type": "array", "items": items, "minItems": 1}
    if not parallel or forced:
        array["maxItems"] = 1
    call = {"type": "object", "properties": {"tool_calls": array}, "required": ["tool_calls"]}
    if forced is not None:
        return schema_grammar(call, "tools")
    answer = {"type": "object", "properties": {"response": {"type": "string"}},
              "required": ["response"]}
    return schema_grammar({"anyOf": [call, answer]}, "tools")


def tool_instructions(tools: list[dict], forced: str | None) -> str:
    listed = "\n".join(json.dumps({k: t[k] for k in ("name", "description", "parameters") if t.get(k)})
                       for t in tools)
    call = '{"tool_calls": [{"name": "<tool name>", "arguments": {<its arguments>}}]}'
    if forced is None:
        # worded for small models: a placeholder like <your answer> gets copied verbatim
        how = (f"Reply with one JSON object, either {call} to call a tool, or "
               '{"response": "..."} to answer the user with the text in place of the dots. '
               "When a tool has given its result, answer the user with it.")
    elif forced:
        how = f"Reply with one JSON object that calls the tool {forced}: {call}"
    else:
        how = f"Reply with one JSON object that calls one of these tools: {call}"
    return ("You can call these tools; each line gives a tool's name, what it does and the "
            f"JSON schema of its arguments:\n{listed}\n\n{how}")


def chat_messages(messages: list[dict], tools: list[dict], forced: str | None) -> list[dict]:
    """The messages as the chat template gets them: content as text, tool calls and results
    in lmhost's tool format, the tools' instructions in the system message."""
    names = {}
    out = []
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        if role == "developer":
            role = "system"
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                names[call.get("id")] = function.get("name")
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    arguments = function.get("arguments")
                calls.append({"name": function.get("name"), "arguments": arguments})
            content = json.dumps({"tool_calls": calls})
        elif role == "tool":
            name = message.get("name") or names.get(message.get("tool_call_id")) or "the tool"
            role, content = "user", f"Result of {name}: {content}"
        out.append({"role": role, "content": content})
    if tools:
        instructions = tool_instructions(tools, forced)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{instructions}"}
        else:
            out.insert(0, {"role": "system", "content": instructions})
    return out


_OPENING = re.compile(r'^\s*\{\s*"(response|tool_calls)"\s*:\s*')


class ToolOutput:
    """Reads the output of a tool-mode generation: `feed(raw)` returns the response text that
    can be shown so far; `finish()` returns (text to show, calls) once generation ended."""

    def __init__(self):
        from workers.instance.textstream import JsonStringReader
        self.raw = ""
        self.kind: str | None = None   # "response" | "tool_calls", once the output says
        self._string = JsonStringReader()
        self._started = False          # inside the response's string
        self._at = 0                   # how much of `raw` is read

    def feed(self, piece: str) -> str:
        self.raw += piece
        if self.kind is None:
            match = _OPENING.match(self.raw)
            if match is None:
                return ""
            self.kind, self._at = match.group(1), match.end()
        if self.kind != "response":
            return ""
        if not self._started:
            rest = self.raw[self._at:].lstrip()
            if not rest.startswith('"'):
                return ""
            self._started = True
            self._at = len(self.raw) - len(rest) + 1
        new, self._at = self.raw[self._at:], len(self.raw)
        return self._string.feed(new)

    def finish(self) -> tuple[str, list[dict]]:
        """Calls when the output was a complete ``tool_calls`` object; else no calls, and the
        raw output as text when it was not a response (cut short by a token limit)."""
        if self.kind == "tool_calls":
            try:
                calls = json.loads(self.raw)["tool_calls"]
            except (ValueError, KeyError, TypeError):
                return self.raw, []
            return "", [{"id": f"call_{uuid.uuid4().hex[:24]}", "name": c["name"],
                         "arguments": json.dumps(c["arguments"], ensure_ascii=False)}
                        for c in calls]
        if self.kind is None:
            return self.raw, []
        return "", []
