"""The pure parts of the instance's generation engine: text held back for stop strings and
split UTF-8, JSON strings read piece by piece, tool-call prompts, grammars and output."""

from __future__ import annotations

import json

import pytest

from workers.instance import structured
from workers.instance.structured import RequestError, ToolOutput
from workers.instance.textstream import JsonStringReader, StopStrings, Utf8Pieces


def feed_all(stops: StopStrings, pieces) -> tuple[str, str | None]:
    out, found = [], None
    for piece in pieces:
        text, found = stops.feed(piece)
        out.append(text)
        if found:
            break
    out.append(stops.flush())
    return "".join(out), found


@pytest.mark.parametrize("pieces, stops, text, found", [
    (["Hello", " wor", "ld. More"], ["."], "Hello world", "."),
    (["a", "<", "|e", "nd|>", "b"], ["<|end|>"], "a", "<|end|>"),
    (["a<", "b"], ["<|end|>"], "a<b", None),             # a false start is released
    (["x", "EN"], ["END"], "xEN", None),                  # held back, then flushed at the end
    (["one two"], ["two", "one"], "", "one"),             # the earliest stop wins
    (["abc"], [], "abc", None),
])
def test_stop_strings_hold_back_only_what_may_start_one(pieces, stops, text, found):
    assert feed_all(StopStrings(stops), pieces) == (text, found)


def test_stop_strings_emit_as_soon_as_text_cannot_start_a_stop():
    stops = StopStrings(["\n\n"])
    assert stops.feed("Hi") == ("Hi", None)
    assert stops.feed(" there\n") == (" there", None)
    assert stops.feed("x") == ("\nx", None)


def test_utf8_pieces_never_split_a_character():
    data = "é€😀".encode()
    pieces = Utf8Pieces()
    out = [pieces.feed(data[i:i + 1]) for i in range(len(data))]
    assert "".join(out) + pieces.flush() == "é€😀" and "\ufffd" not in "".join(out)


def test_json_string_reader_decodes_escapes_split_across_pieces():
    raw = json.dumps('say "hi"\n\\ caf\u00e9 \U0001F600 /') + ' } trailing'
    reader = JsonStringReader()
    out = "".join(reader.feed(raw[i:i + 2]) for i in range(1, len(raw), 2))
    assert out == 'say "hi"\n\\ caf\u00e9 \U0001F600 /' and reader.closed


TOOLS = [{"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}},
         {"name": "add", "parameters": {"type": "object"}}]


def test_tool_mode_follows_tool_choice():
    assert structured.tool_mode({"tools": TOOLS}) == (TOOLS, None)
    assert structured.tool_mode({"tools": TOOLS, "tool_choice": "required"}) == (TOOLS, "")
    assert structured.tool_mode({"tools": TOOLS, "tool_choice": {"name": "add"}}) == ([TOOLS[1]], "add")
    assert structured.tool_mode({"tools": TOOLS, "tool_choice": "none"}) == ([], None)
    assert structured.tool_mode({}) == ([], None)


@pytest.mark.parametrize("params, param", [
    ({"tools": TOOLS, "tool_choice": {"name": "nope"}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"name": "a b"}]}, "tools"),
    ({"tools": [TOOLS[0], TOOLS[0]]}, "tools"),
    ({"tools": [{"name": "x", "parameters": [1]}]}, "tools"),
])
def test_bad_tool_requests_name_the_field(params, param):
    with pytest.raises(RequestError) as caught:
        structured.tool_mode(params)
    assert caught.value.param == param


def test_tool_calls_and_results_are_written_back_in_the_tool_format():
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    out = structured.chat_messages(messages, TOOLS, None)
    assert out[0]["role"] == "system" and "get_weather" in out[0]["content"]
    assert json.loads(out[2]["content"]) == {"tool_calls": [
        {"name": "get_weather", "arguments": {"city": "Paris"}}]}
    assert out[3] == {"role": "user", "content": "Result of get_weather: sunny"}
    with_system = structured.chat_messages([{"role": "developer", "content": "Be brief."}], TOOLS, "")
    assert with_system[0]["content"].startswith("Be brief.\n\n") and len(with_system) == 1


def test_tool_output_streams_a_response_and_parses_calls():
    answer = ToolOutput()
    raw = '{"response": "It is \\"sunny\\"."}'
    assert "".join(answer.feed(raw[i:i + 3]) for i in range(0, len(raw), 3)) == 'It is "sunny".'
    assert answer.finish() == ("", [])
    calls = ToolOutput()
    for piece in ('{"tool_calls": [{"name": "add", ', '"arguments": {"a": 1}}]}'):
        assert calls.feed(piece) == ""
    text, found = calls.finish()
    assert text == "" and [(c["name"], json.loads(c["arguments"])) for c in found] == [("add", {"a": 1})]
    assert found[0]["id"].startswith("call_")
    cut = ToolOutput()
    cut.feed('{"tool_calls": [{"name": "ad')
    assert cut.finish() == ('{"tool_calls": [{"name": "ad', [])  # cut short: shown as it is


def test_grammars_from_schemas_and_their_limits():
    grammar = structured.output_grammar({"json_schema": {"type": "object", "properties": {
        "age": {"type": "integer"}}, "required": ["age"]}})
    assert "root ::=" in grammar and '\\"age\\"' in grammar
    assert "root ::=" in structured.output_grammar({"json_object": True})
    assert structured.output_grammar({}) is None
    assert "tool_calls" in structured.tool_grammar(TOOLS, None, True)
    for params, words in (({"json_schema": {"type": "frob"}}, "cannot be turned"),
                          ({"json_schema": [1]}, "must be an object"),
                          ({"json_schema": {"type": "array", "items": {"type": "integer"},
                                            "minItems": 100000}}, "larger than"),
                          ({"gbnf": "root ::= [a-z]{1,99999}"}, "more than"),
                          ({"json_schema": {}, "gbnf": "root ::= \"x\""}, "give one of")):
        with pytest.raises(RequestError, match=words):
            structured.output_grammar(params)
