"""OpenAI's chat completion wire format as plug-lite serve speaks it (plug_lite.openai_api), without a
server: request checks, response shapes, and the PLUG split into reasoning_content / content."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plug_lite import formats, languages, openai_api
from plug_lite.openai_api import APIError, PivotSplit, parse_chat_request

USER = [{"role": "user", "content": "你好"}]


def test_full_request_is_read():
    req = parse_chat_request(json.dumps({
        "model": "m", "messages": [{"role": "system", "content": "s"},
                                   {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                                   {"role": "assistant", "content": None, "reasoning_content": "r"},
                                   {"role": "user", "content": "c"}],
        "stream": True, "stream_options": {"include_usage": True}, "max_completion_tokens": 9, "temperature": 0.5,
        "seed": 3, "stop": "END", "top_p": 0.9, "top_k": 20, "frequency_penalty": 0.1, "n": 1, "user": "u",
        "metadata": {"a": "b"}, "tool_choice": "none", "response_format": {"type": "text"}, "pivot": "hidden",
    }).encode())
    assert [m["content"] for m in req.messages] == ["s", "ab", "", "c"]
    assert (req.stream, req.include_usage, req.max_tokens, req.temperature, req.seed, req.stop, req.pivot) == \
        (True, True, 9, 0.5, 3, ["END"], "hidden")
    assert req.sampling == {"top_p": 0.9, "top_k": 20, "frequency_penalty": 0.1}


@pytest.mark.parametrize("value,pivot", [("none", "content"), ("deepseek", "reasoning"), ("auto", "reasoning")])
def test_llama_cpp_reasoning_format_maps_to_pivot(value, pivot):
    assert parse_chat_request({"messages": USER, "reasoning_format": value}).pivot == pivot
    assert parse_chat_request({"messages": USER}).pivot is None  # the server's default


BAD = [
    (b"{nope", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, None, "nested too deeply"),
    (b'{"messages": [{"role": "user", "content": "a\\ud83d"}]}', "messages[0].content", "unpaired UTF-16 surrogate"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ude00x"]}', "stop[0]", "unpaired UTF-16 surrogate"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "\\ud800": 1}', "\\ud800", "unpaired UTF-16 surrogate"),
    ({}, "messages", "'messages' is required"),
    ({"messages": "hi"}, "messages", "must be an array"),
    ({"messages": []}, "messages", "is empty"),
    ({"messages": [{"role": "system", "content": "s"}]}, "messages", "no user message"),
    ({"messages": ["hi"]}, "messages[0]", "must be an object"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "must be one of"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "has no 'content'"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "must be a string or an array"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]", "not supported"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role", "not supported"),
    ({"messages": USER, "temperature": "hot"}, "temperature", "must be a number, got a string"),
    ({"messages": USER, "temperature": 3}, "temperature", "between 0 and 2"),
    (b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "temperature", "must be a number"),
    ({"messages": USER, "stream": "yes"}, "stream", "must be a boolean"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"messages": USER, "max_tokens": 1.5}, "max_tokens", "must be an integer"),
    ({"messages": USER, "max_tokens": True}, "max_tokens", "must be an integer, got a boolean"),
    ({"messages": USER, "stop": [1]}, "stop", "array of strings"),
    ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"messages": USER, "stream_options": {"include_usage": True}}, "stream_options", "only allowed when 'stream'"),
    ({"messages": USER, "foo": 1}, "foo", "unrecognized request argument: 'foo'"),
    ({"messages": USER, "n": 2}, "n", "'n' must be 1"),
    ({"messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "not supported"),
    ({"messages": USER, "logprobs": True}, "logprobs", "not supported"),
    ({"messages": USER, "response_format": {"type": "json_object"}}, "response_format", "JSON modes"),
    ({"messages": USER, "pivot": "sideways"}, "pivot", "reasoning, hidden, content"),
    ({"messages": USER, "reasoning_format": "deepseek-legacy"}, "reasoning_format", "none, auto or deepseek"),
]


@pytest.mark.parametrize("body,param,message", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_request_names_the_field(body, param, message):
    with pytest.raises(APIError) as e:
        parse_chat_request(body if isinstance(body, bytes) else json.dumps(body).encode())
    assert e.value.status == 400 and e.value.param == param and message in e.value.message
    err = e.value.body()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


def test_response_shapes():
    cid = openai_api.new_id()
    assert cid.startswith("chatcmpl-") and len(cid) == len("chatcmpl-") + 29 and cid != openai_api.new_id()
    use = openai_api.usage(10, 7, 4)
    assert use == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                   "completion_tokens_details": {"reasoning_tokens": 4}}
    common = {"id": cid, "created": 1, "model": "m", "fingerprint": "fp_x"}
    c = openai_api.completion(**common, content="答", reasoning="r", finish_reason="stop", usage=use)
    assert c["object"] == "chat.completion" and c["choices"][0]["message"] == {
        "role": "assistant", "content": "答", "refusal": None, "reasoning_content": "r"}
    assert "reasoning_content" not in openai_api.completion(**common, content="a", reasoning=None, finish_reason="stop",
                                                            usage=use)["choices"][0]["message"]
    ch = openai_api.chunk(**common, delta={"content": "x"})
    assert ch["object"] == "chat.completion.chunk" and ch["choices"][0]["finish_reason"] is None
    last = openai_api.usage_chunk(**common, usage=use)
    assert last["choices"] == [] and last["usage"] == use


# --------------------------------------------------------------------------------------------
# The split, fed as a model streams

EN = languages.get("en")


def _split(text: str, cuts: list[int], mode: str, think=None) -> dict:
    parser = formats.StreamParser(target="zh", pivot="en", think=think)
    split = PivotSplit(mode, EN)
    out = {"reasoning_content": "", "content": ""}
    bounds = [0, *sorted(set(c % (len(text) + 1) for c in cuts)), len(text)]
    pieces = []
    for a, b in zip(bounds, bounds[1:]):
        pieces += split.pieces(parser.feed(text[a:b]))
    pieces += split.pieces(parser.close()) + split.finish(parser.result)
    for fld, t in pieces:
        out[fld] += t
    return out


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 400), max_size=12), think=st.booleans())
def test_reasoning_mode_puts_the_pivot_with_headers_apart(cuts, think):
    text = formats.render_plug("What color is the sky?", "The sky is blue.\nIt scatters light.", "天空是蓝色的。\n因为散射。",
                               target="zh", think=think)
    out = _split(text, cuts, "reasoning")
    assert out["content"] == "天空是蓝色的。\n因为散射。"
    assert out["reasoning_content"] == "English instruction: What color is the sky?\n\nEnglish response: The sky is blue.\nIt scatters light."
    hidden = _split(text, cuts, "hidden")
    assert hidden == {"reasoning_content": "", "content": "天空是蓝色的。\n因为散射。"}


def test_no_target_section_sends_what_the_model_wrote():
    out = _split("English instruction: Q?\n\nEnglish response: Only English.", [10, 30], "reasoning")
    assert out["content"] == "Only English." and out["reasoning_content"].endswith("English response: Only English.")
    out = _split("just some text", [4], "hidden")
    assert out == {"reasoning_content": "", "content": "just some text"}
    with pytest.raises(ValueError):
        PivotSplit("content", EN)
