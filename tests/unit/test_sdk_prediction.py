"""The SDK's prediction config and chat history as the engine's job (pure translations)."""

from __future__ import annotations

import pytest

from app.sdk.framing import SdkError
from app.sdk.prediction import (history_messages, progress_held, progress_message, stats,
                                tool_call_messages)
from app.sdk.predictconfig import job_params


def stack(**fields) -> dict:
    return {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": f"llm.prediction.{k}", "value": v} for k, v in fields.items()]}}]}


def test_config_keys_map_to_job_fields_and_are_echoed():
    job, applied = job_params(stack(
        temperature=0.2, maxPredictedTokens={"checked": True, "value": 50},
        stopStrings=["\n"], topKSampling=-1, topPSampling={"checked": False, "value": 0.5},
        repeatPenalty={"checked": True, "value": 1.1}, seed={"checked": True, "value": 7},
        structured={"type": "json", "jsonSchema": {"type": "object"}},
        systemPrompt="Be brief.", toolNaming="removeSpecial"))
    assert job == {"temperature": 0.2, "max_tokens": 50, "stop": ["\n"], "top_k": 0,
                   "top_p": 1.0, "repeat_penalty": 1.1, "seed": 7,
                   "json_schema": {"type": "object"}, "system_prompt": "Be brief."}
    assert applied[0] == {"key": "llm.prediction.temperature", "value": 0.2}
    assert job_params(stack(seed={"checked": True, "value": -1}))[0] == {}  # -1: random


def test_tools_force_and_tool_choice():
    tools = {"type": "toolArray", "tools": [{"type": "function", "function": {
        "name": "f", "description": "d", "parameters": {"type": "object"}}}], "force": True}
    job, _ = job_params(stack(tools=tools, toolChoice={"type": "generic", "mode": "auto"}))
    assert job == {"tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}],
                   "parallel_tool_calls": False, "tool_choice": "required"}
    assert job_params(stack(tools={"type": "none"}))[0] == {}


def test_prompt_templates_jinja_and_manual():
    jinja, _ = job_params(stack(promptTemplate={"type": "jinja", "jinjaPromptTemplate": {
        "template": "{{ messages[0]['content'] }}", "bosToken": "", "eosToken": ""},
        "stopStrings": []}))
    assert jinja["template"] == {"jinja": "{{ messages[0]['content'] }}", "bos_token": "",
                                 "eos_token": ""}
    manual, _ = job_params(stack(promptTemplate={"type": "manual", "manualPromptTemplate": {
        "beforeSystem": "S: ", "afterSystem": "\n", "beforeUser": "Q's: ", "afterUser": "\n",
        "beforeAssistant": "A: ", "afterAssistant": "\n"}, "stopStrings": []}))
    import jinja2
    rendered = jinja2.Template(manual["template"]["jinja"]).render(
        messages=[{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert rendered == "Q's: hi\nA: "


@pytest.mark.parametrize("fields, key", [
    ({"maxPredictedTokens": {"checked": True, "value": 0}}, "maxPredictedTokens"),
    ({"maxPredictedTokens": 5}, "maxPredictedTokens"),
    ({"temperature": "hot"}, "temperature"),
    ({"speculativeDecoding.draftModel": "x"}, "speculativeDecoding.draftModel"),
    ({"contextOverflowPolicy": "rollingWindow"}, "contextOverflowPolicy"),
    ({"structured": {"type": "xml"}}, "structured"),
    ({"toolChoice": {"type": "generic", "mode": "sometimes"}}, "toolChoice"),
])
def test_bad_config_names_the_key(fields, key):
    with pytest.raises(SdkError, match=f"llm.prediction.{key}".replace(".", r"\.")):
        job_params(stack(**fields))


def test_history_with_tool_calls_and_results():
    history = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "12 times 7?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}, {
            "type": "toolCallRequest", "toolCallRequest": {
                "type": "function", "id": "c1", "name": "multiply", "arguments": {"a": 12, "b": 7}}}]},
        {"role": "tool", "content": [{"type": "toolCallResult", "content": "84", "toolCallId": "c1"}]}]}
    messages = history_messages(history, "Be brief.")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[2]["tool_calls"][0]["function"] == {"name": "multiply",
                                                        "arguments": '{"a": 12, "b": 7}'}
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "name": None, "content": "84"}
    with pytest.raises(SdkError, match="text models"):
        history_messages({"messages": [{"role": "user", "content": [{"type": "file"}]}]})


def test_progress_tool_calls_and_stats_shapes():
    assert progress_message({"tokens": 10, "cached": 4, "processed": 7})["progress"] == 0.5
    assert progress_message({"tokens": 4, "cached": 4, "processed": 4})["progress"] == 1.0
    messages = tool_call_messages({"id": "c1", "name": "f", "arguments": '{"x": 1}'})
    assert [m["type"] for m in messages] == ["toolCallGenerationStart",
                                            "toolCallGenerationNameReceived",
                                            "toolCallGenerationArgumentFragmentGenerated",
                                            "toolCallGenerationEnd"]
    assert messages[-1]["toolCallRequest"] == {"type": "function", "id": "c1", "name": "f",
                                               "arguments": {"x": 1}}
    done = {"stop": "stop_string", "stop_string": "\n", "prompt_tokens": 5, "completion_tokens": 3,
            "ttft": 0.1, "tokens_per_second": 30.0}
    assert stats(done) == {"stopReason": "stopStringFound", "stopString": "\n",
                           "tokensPerSecond": 30.0, "timeToFirstTokenSec": 0.1,
                           "promptTokensCount": 5, "predictedTokensCount": 3, "totalTokensCount": 8}


def test_the_first_prompt_report_waits_for_the_next_line():
    # the client is not woken while the prompt is evaluated: its 0 goes with the next report
    lines = [{"prompt": {"tokens": 9, "cached": 1, "processed": 1}},
             {"prompt": {"tokens": 9, "cached": 1, "processed": 5}},
             {"prompt": {"tokens": 9, "cached": 1, "processed": 9}},
             {"text": "a", "tokens": 1}, {"done": {}}]
    read = []

    def instance():
        for line in lines:
            read.append(line)
            yield line

    given = []
    for line in progress_held(instance()):
        given.append((line, len(read)))
    assert [line for line, _ in given] == lines  # the same lines, in the same order
    assert given[0][1] == 2  # the first report was given once the second was read
    assert [count for _, count in given[1:]] == [2, 3, 4, 5]  # the rest at once


def test_a_prompt_evaluated_in_one_batch_reports_only_its_end():
    # each frame before the first fragment costs the client a wake; both clients take a
    # first report above 0 as it is
    lines = [{"prompt": {"tokens": 9, "cached": 1, "processed": 1}},
             {"prompt": {"tokens": 9, "cached": 1, "processed": 9}},
             {"text": "a", "tokens": 1}, {"done": {}}]
    assert list(progress_held(iter(lines))) == lines[1:]


def test_a_held_prompt_report_is_not_dropped_when_no_report_follows():
    report = {"prompt": {"tokens": 3, "cached": 0, "processed": 0}}
    assert list(progress_held(iter([report, {"done": {"stop": "cancelled"}}]))) == [
        report, {"done": {"stop": "cancelled"}}]
    assert list(progress_held(iter([report]))) == [report]
