"""SDK prediction config -> the fields of a ``generate`` job (`workers.instance.jobs`).

The clients send a ``predictionConfigStack`` of KV fields under ``llm.prediction.``
(``temperature``, ``maxPredictedTokens``, ``structured``, ``tools``, ...), later layers
overriding earlier ones. Each supported key maps to one job field; a key lmhost cannot honour
is an error naming it, never dropped silently (as for load config, `app.sdk.loadconfig`),
except those that ask for what lmhost does anyway. Returns the job's fields and the fields it
applied (the ``predictionConfig`` that ``success`` echoes).
"""

from __future__ import annotations

from app.sdk.framing import SdkError
from app.sdk.loadconfig import config_fields

PREFIX = "llm.prediction."
# checkbox fields ({"checked", "value"}): key -> (job field, value when unchecked)
_CHECKBOX = {
    "maxPredictedTokens": ("max_tokens", None),
    "topPSampling": ("top_p", 1.0),
    "minPSampling": ("min_p", 0.0),
    "repeatPenalty": ("repeat_penalty", 1.0),
    "seed": ("seed", None),
    "llama.frequencyPenalty": ("frequency_penalty", 0.0),
    "llama.presencePenalty": ("presence_penalty", 0.0),
}
_NUMBERS = {"temperature": ("temperature", 0.0, None), "topKSampling": ("top_k", -1, 500)}
# keys whose value asks for what lmhost does anyway
_AS_DONE = {"toolCallStopStrings": [], "contextOverflowPolicy": "stopAtLimit",
            "logProbs": {"checked": False, "value": 0}}
_ACCEPTED = {"toolNaming", "reasoning.parsing", "reasoning.enableThinking"}  # no effect here


def job_params(stack) -> tuple[dict, list[dict]]:
    job: dict = {}
    applied = []
    for key, value in config_fields(stack):
        if not key.startswith(PREFIX):
            raise SdkError(f"{key}: not a prediction setting")
        name = key[len(PREFIX):]
        _apply(job, name, value, key)
        applied.append({"key": key, "value": value})
    return job, applied


def _apply(job: dict, name: str, value, key: str) -> None:
    if name in _CHECKBOX:
        field, unchecked = _CHECKBOX[name]
        if not (isinstance(value, dict) and isinstance(value.get("checked"), bool)):
            raise SdkError(f"{key}: must be {{\"checked\": true|false, \"value\": ...}}")
        number = value.get("value") if value["checked"] else unchecked
        if number is not None and (isinstance(number, bool) or not isinstance(number, (int, float))):
            raise SdkError(f"{key}: the value must be a number")
        if name == "maxPredictedTokens" and number is not None and (int(number) != number or number < 1):
            raise SdkError(f"{key}: must be a whole number of at least 1")
        if name == "seed" and number is not None and number < 0:
            number = None  # -1: a random seed
        if number is not None:
            job[field] = int(number) if name in ("maxPredictedTokens", "seed") else number
    elif name in _NUMBERS:
        field, low, high = _NUMBERS[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
                high is not None and value > high):
            raise SdkError(f"{key}: must be a number from {low}" + (f" to {high}" if high else ""))
        job[field] = max(0, int(value)) if name == "topKSampling" else value
    elif name == "stopStrings":
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise SdkError(f"{key}: must be a list of strings")
        job["stop"] = value
    elif name == "structured":
        _structured(job, value, key)
    elif name == "tools":
        _tools(job, value, key)
    elif name == "toolChoice":
        mode = value.get("mode") if isinstance(value, dict) and value.get("type") == "generic" else None
        if mode not in ("none", "auto", "required"):
            raise SdkError(f"{key}: must be {{\"type\": \"generic\", \"mode\": none|auto|required}}")
        if mode != "auto" or "tool_choice" not in job:  # tools' "force" means required
            job["tool_choice"] = mode
    elif name == "promptTemplate":
        job["template"] = _template(value, key)
    elif name == "systemPrompt":
        if not isinstance(value, str):
            raise SdkError(f"{key}: must be a string")
        job["system_prompt"] = value or None
    elif name in _AS_DONE:
        if value != _AS_DONE[name]:
            raise SdkError(f"{key}: lmhost supports only {_AS_DONE[name]!r}")
    elif name not in _ACCEPTED:
        raise SdkError(f"{key}: not a prediction setting lmhost supports",
                       suggestion="Supported: temperature, maxTokens, stopStrings, topKSampling, "
                                  "topPSampling, minPSampling, repeatPenalty, seed, structured "
                                  "(response_format), tools, toolChoice, promptTemplate, "
                                  "systemPrompt")


def _structured(job: dict, value, key: str) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json":
        job["json_schema"] = value.get("jsonSchema") if value.get("jsonSchema") is not None else {}
    elif kind == "gbnf":
        if not isinstance(value.get("gbnfGrammar"), str):
            raise SdkError(f"{key}: gbnfGrammar must be a string")
        job["gbnf"] = value["gbnfGrammar"]
    elif kind != "none":
        raise SdkError(f"{key}: must be {{\"type\": \"none\" | \"json\" | \"gbnf\", ...}}")


def _tools(job: dict, value, key: str) -> None:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "none":
        return
    if kind != "toolArray" or not isinstance(value.get("tools", []), list):
        raise SdkError(f"{key}: must be {{\"type\": \"toolArray\", \"tools\": [...]}} or "
                       "{\"type\": \"none\"}")
    tools = []
    for tool in value.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            raise SdkError(f"{key}: each tool must be {{\"type\": \"function\", \"function\": "
                           "{\"name\", \"description\", \"parameters\"}}")
        tools.append({k: function[k] for k in ("name", "description", "parameters")
                      if function.get(k) is not None})
    job["tools"] = tools
    job["parallel_tool_calls"] = False  # one call per round: act() runs it, then asks again
    if value.get("force"):
        job["tool_choice"] = "required"


def _template(value, key: str) -> dict:
    """A prompt template as the job's ``{"jinja", "bos_token", "eos_token"}``; a manual one
    (text before and after each role's message) is written as Jinja."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "jinja":
        jinja = value.get("jinjaPromptTemplate") or {}
        if not isinstance(jinja.get("template"), str):
            raise SdkError(f"{key}: jinjaPromptTemplate.template must be a string")
        return {"jinja": jinja["template"], "bos_token": str(jinja.get("bosToken") or ""),
                "eos_token": str(jinja.get("eosToken") or "")}
    if kind == "manual":
        manual = value.get("manualPromptTemplate") or {}
        parts = {}
        for role in ("System", "User", "Assistant"):
            for side in ("before", "after"):
                text = manual.get(f"{side}{role}", "")
                if not isinstance(text, str):
                    raise SdkError(f"{key}: manualPromptTemplate.{side}{role} must be a string")
                parts[f"{side}_{role.lower()}"] = text.replace("\\", "\\\\").replace("'", "\\'")
        jinja = ("{% for m in messages %}"
                 + "".join("{% if m['role'] == '" + role + "' %}{{ '" + parts[f"before_{role}"]
                           + "' + m['content'] + '" + parts[f"after_{role}"] + "' }}{% endif %}"
                           for role in ("system", "user", "assistant"))
                 + "{% endfor %}{% if add_generation_prompt %}{{ '"
                 + parts["before_assistant"] + "' }}{% endif %}")
        return {"jinja": jinja, "bos_token": "", "eos_token": ""}
    raise SdkError(f"{key}: must be {{\"type\": \"jinja\" | \"manual\", ...}}")
