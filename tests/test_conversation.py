"""The conversation policy shared by chat and serve (plug_lite.conversation)."""

from __future__ import annotations

import pytest

from plug_lite import conversation, formats
from plug_lite.spec import PlugSpec

SPEC = PlugSpec("plug", "zh", "en")
OWN = SPEC.system_prompt()
SCAFFOLD = formats.render_plug("What color is the sky?", "The sky is blue.", "天空是蓝色的。", target="zh")


def test_system_prompt_override_and_plain():
    assert conversation.system_prompt(SPEC) == OWN and "Chinese" in OWN
    assert conversation.system_prompt(SPEC, "Be brief.") == "Be brief."
    assert conversation.system_prompt(SPEC, "") is None  # an empty override means no system prompt
    assert conversation.system_prompt(None) is None


@pytest.mark.parametrize("rule,want", [
    ("append", OWN + "\n\nAnswer in one sentence."),
    ("ignore", OWN),
    ("replace", "Answer in one sentence."),
])
def test_client_system_rules(rule, want):
    assert conversation.client_system(OWN, "  Answer in one sentence.\n", rule) == want
    # no client text: the model's own prompt under every rule; no prompt of its own: the client's
    assert conversation.client_system(OWN, "  ", rule) == OWN
    assert conversation.client_system(None, "Answer in one sentence.", rule) == "Answer in one sentence."


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="append, ignore, replace"):
        conversation.client_system(OWN, "x", "merge")


def test_kept_answer_is_the_target_answer():
    assert conversation.kept_answer(SCAFFOLD, SPEC) == "天空是蓝色的。"
    assert conversation.kept_answer("  天空是蓝色的。\n", SPEC) == "天空是蓝色的。"  # already the answer
    think = formats.render_plug("Q?", "A.", "答。", target="zh", think=True)
    assert conversation.kept_answer(think, SPEC) == "答。"
    assert conversation.kept_answer("  plain text\n", None) == "plain text"
    # no target section: what the model wrote instead (as chat shows it)
    assert conversation.kept_answer("English response: only English.", SPEC) == "only English."


def test_from_client_applies_the_policy():
    msgs = [
        {"role": "developer", "content": "Be kind."},
        {"role": "user", "content": "天空是什么颜色？"},
        {"role": "assistant", "content": SCAFFOLD},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "为什么？"},
    ]
    assert conversation.from_client(msgs, SPEC) == [
        {"role": "system", "content": OWN + "\n\nBe kind.\n\nBe brief."},
        {"role": "user", "content": "天空是什么颜色？"},
        {"role": "assistant", "content": "天空是蓝色的。"},
        {"role": "user", "content": "为什么？"},
    ]
    assert conversation.from_client(msgs, SPEC, rule="ignore")[0] == {"role": "system", "content": OWN}
    assert conversation.from_client(msgs, SPEC, override="Server prompt.", rule="ignore")[0]["content"] == "Server prompt."
    # a plain model: the client's system text as it is, assistant turns only stripped
    plain = conversation.from_client(msgs, None)
    assert plain[0] == {"role": "system", "content": "Be kind.\n\nBe brief."}
    assert plain[2] == {"role": "assistant", "content": SCAFFOLD.strip()}
    # no system message anywhere and no prompt of its own: none is sent
    assert conversation.from_client([{"role": "user", "content": "hi"}], None) == [{"role": "user", "content": "hi"}]
