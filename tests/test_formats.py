"""PLUG format: round trips and streaming (hypothesis), leniency rules and statuses (examples)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from plug_lite import formats, languages, spec
from plug_lite.formats import StreamParser, has_header, parse, render, render_plug

CODES = languages.codes()
PIVOTS = ["en", "zh", "ko", "es", "ar"]  # English and several non-English pivots
SETTINGS = settings(max_examples=int(__import__("os").environ.get("PLUG_HYP_EXAMPLES", "120")), deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])

# Characters of every registered language (from its names and headers) plus structure marks.
_SCRIPT = sorted({c for code in CODES for lang in [languages.get(code)]
                  for c in lang.native + lang.response_header + lang.instruction_header})
_MARKS = list("\n\n  \t*#_:：-<>/`.,!?0123456789") + ["\u3000"]
ALPHABET = st.sampled_from(_SCRIPT + _MARKS + list("abcxyzABC"))


def _header_fragments() -> list[str]:
    out = ["<think>", "</think>", "<thi", "</th", "**", "## ", "__", ":", "：", "\n\n"]
    for code in CODES:
        lang = languages.get(code)
        for h in (lang.response_header, lang.instruction_header):
            name = h.rstrip(":：")
            out += [h, name, name[: max(1, len(name) // 2)], f"**{name}**:", f"## {name}：", name.upper()]
    return out


FRAGMENTS = _header_fragments()
messy_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(ALPHABET, min_size=1, max_size=12)), max_size=14
).map("".join)


def clean_text(target: str, pivot: str, fmt: str):
    """Text a user could write: any script, markup, header fragments; never a header itself."""
    return messy_text.filter(lambda s: s.strip() != "" and not has_header(s, target=target, pivot=pivot, fmt=fmt))


@st.composite
def lang_pair(draw):
    target = draw(st.sampled_from(CODES))
    pivot = draw(st.sampled_from([p for p in PIVOTS if p != target]))
    return target, pivot


@st.composite
def rendered_case(draw):
    target, pivot = draw(lang_pair())
    fmt = draw(st.sampled_from(spec.FORMATS))
    think = fmt == "plug" and draw(st.booleans())
    pi = draw(clean_text(target, pivot, fmt))
    pr = draw(clean_text(target, pivot, fmt))
    tr = draw(clean_text(target, pivot, fmt))
    text = render(fmt, target=target, pivot=pivot, pivot_instruction=pi, pivot_response=pr,
                  target_response=tr, think=think)
    return dict(target=target, pivot=pivot, fmt=fmt, think=think, pi=pi, pr=pr, tr=tr, text=text)


@SETTINGS
@given(rendered_case())
def test_parse_inverts_render(case):
    got = parse(case["text"], target=case["target"], pivot=case["pivot"], fmt=case["fmt"])
    assert got.status == "ok"
    if case["fmt"] in ("plug", "mono"):
        assert got.target == case["tr"].strip()
        assert got.answer == case["tr"].strip()
    else:
        assert got.target is None
    if case["fmt"] in ("plug", "pivot_only"):
        assert got.pivot_instruction == case["pi"].strip()
        assert got.pivot_response == case["pr"].strip()
    assert got.preamble == "" and got.extra == ""


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts}) + [len(text)]
    pieces, last = [], 0
    for p in points:
        pieces.append(text[last:p])
        last = p
    return pieces


def _stream(text: str, pieces: list[str], finished: bool = True, **kw):
    sp = StreamParser(**kw)
    joined = {s: "" for s in formats.SECTIONS}
    for piece in pieces:
        for ev in sp.feed(piece):
            joined[ev.section] += ev.text
    for ev in sp.close(finished=finished):
        joined[ev.section] += ev.text
    return joined, sp.result


def _check_stream_equals_batch(text, cuts, target, pivot, fmt, finished=True):
    batch = parse(text, target=target, pivot=pivot, fmt=fmt, finished=finished)
    joined, result = _stream(text, _split(text, cuts), finished, target=target, pivot=pivot, fmt=fmt)
    assert joined["preamble"] == batch.preamble
    assert joined["pivot_instruction"] == (batch.pivot_instruction or "")
    assert joined["pivot_response"] == (batch.pivot_response or "")
    assert joined["target"] == (batch.target or "")
    assert joined["extra"] == batch.extra
    assert result == batch


@SETTINGS
@given(rendered_case(), st.lists(st.integers(0, 2000), max_size=12), st.booleans())
def test_stream_equals_batch_on_rendered_text(case, cuts, finished):
    _check_stream_equals_batch(case["text"], cuts, case["target"], case["pivot"], case["fmt"], finished)


@SETTINGS
@given(lang_pair(), st.sampled_from(spec.FORMATS), messy_text,
       st.lists(st.integers(0, 300), max_size=10), st.booleans())
@example(("zh", "en"), "plug", "中文回复：中文回复：好\n中文回复：再来", [3, 7], True)
@example(("ko", "en"), "plug", "**English response**: hi\n## 한국어 응답: 안녕", [1, 2, 3, 4, 5], False)
@example(("zh", "en"), "plug", "<think>\nEnglish instruction: q\nEnglish response: a\n</think>\n\n答", [2, 9, 60], True)
def test_stream_equals_batch_on_messy_text(pair, fmt, text, cuts, finished):
    target, pivot = pair
    _check_stream_equals_batch(text, cuts, target, pivot, fmt, finished)


@SETTINGS
@given(lang_pair(), st.sampled_from(spec.FORMATS), messy_text)
def test_one_character_at_a_time(pair, fmt, text):
    target, pivot = pair
    _check_stream_equals_batch(text, list(range(len(text))), target, pivot, fmt)


# ----------------------------------------------------------------------------------------------
# Regressions found while testing


def test_has_header_ignores_blank_lines():
    # Paragraph breaks made has_header() true for every multi-paragraph answer (fixed in formats.py).
    assert not has_header("First paragraph.\n\nSecond paragraph.", target="zh")
    assert not has_header("line\n   \nline", target="ko", fmt="mono")
    assert has_header("text\n中文回复：x", target="zh")
    assert has_header("text\n**English resp", target="zh")  # could still become a header


# ----------------------------------------------------------------------------------------------
# Leniency rules


PLAIN = "English instruction: Why is the sky blue?\n\nEnglish response: Rayleigh scattering.\n\n中文回复：瑞利散射。"


def test_render_plug_layout_and_paper_header():
    text = render_plug("Why is the sky blue?", "Rayleigh scattering.", "瑞利散射。", target="zh")
    assert text == PLAIN
    assert "中文回复：瑞利散射" in text  # full-width colon, no space after it


@pytest.mark.parametrize(
    "text",
    [
        PLAIN,
        PLAIN.replace("中文回复：", "中文回复: "),  # half-width colon
        PLAIN.replace("中文回复：", "  中文回复 ：  "),  # spaces around
        PLAIN.replace("English response:", "english RESPONSE :"),  # letter case
        PLAIN.replace("English response:", "**English response:**"),  # bold, colon inside
        PLAIN.replace("English response:", "**English response**:"),  # bold, colon outside
        PLAIN.replace("中文回复：", "## 中文回复："),  # markdown heading
        PLAIN.replace("中文回复：", "### **中文回复**："),
        PLAIN.replace("中文回复：", "中文回复：中文回复："),  # repeated header before any text
    ],
)
def test_lenient_headers(text):
    got = parse(text, target="zh")
    assert got.status == "ok"
    assert got.target == "瑞利散射。"
    assert got.pivot_response == "Rayleigh scattering."
    assert got.pivot_instruction == "Why is the sky blue?"


def test_header_only_at_line_start():
    text = PLAIN.replace("Rayleigh scattering.", "It says English response: inline.")
    got = parse(text, target="zh")
    assert got.pivot_response == "It says English response: inline."


def test_unopened_bold_is_not_a_header():
    got = parse("English response**: x\n\n中文回复：好", target="zh")
    assert got.pivot_response is None and got.preamble.startswith("English response**")


def test_looping_model_goes_to_extra():
    text = PLAIN + "\n\nEnglish instruction: Why is the sky blue?\n\nEnglish response: again"
    got = parse(text, target="zh")
    assert got.status == "ok"
    assert got.target == "瑞利散射。"
    assert got.extra.startswith("English instruction: Why is the sky blue?")
    assert "again" not in got.target


def test_repeated_target_header_after_text_is_extra():
    got = parse(PLAIN + "\n中文回复：又一次", target="zh")
    assert got.target == "瑞利散射。" and got.extra == "中文回复：又一次"


def test_preamble_kept_apart():
    got = parse("Sure! Here it is.\n" + PLAIN, target="zh")
    assert got.preamble == "Sure! Here it is." and got.target == "瑞利散射。"


def test_think_variant_round_trip_and_plain_only_mode():
    text = render_plug("q?", "a.", "答。", target="zh", think=True)
    assert text.startswith("<think>\nEnglish instruction: q?") and text.endswith("</think>\n\n答。")
    got = parse(text, target="zh")
    assert (got.status, got.target, got.pivot_response) == ("ok", "答。", "a.")
    assert parse(text, target="zh", think=False).target is None


# ----------------------------------------------------------------------------------------------
# Statuses


def test_status_ok():
    assert parse(PLAIN, target="zh").status == "ok"


def test_status_truncated_by_token_limit():
    cut = PLAIN[: PLAIN.index("瑞利") + 2]
    got = parse(cut, target="zh", finished=False)
    assert got.status == "truncated" and got.target == "瑞利"
    got = parse("English instruction: Why?\n\nEnglish resp", target="zh", finished=False)
    assert got.status == "truncated" and got.target is None


def test_status_truncated_with_empty_target():
    got = parse(PLAIN.replace("瑞利散射。", ""), target="zh")
    assert got.status == "truncated" and got.target == ""


def test_status_monolingual():
    got = parse("English instruction: Why?\n\nEnglish response: Because.", target="zh")
    assert got.status == "monolingual" and got.target is None
    assert got.answer == "Because."


def test_status_not_found():
    got = parse("Just some text without structure.", target="zh")
    assert got.status == "not_found" and got.answer == "Just some text without structure."


def test_pivot_only_and_mono_statuses():
    po = render("pivot_only", target="ko", pivot="en", pivot_instruction="q", pivot_response="a")
    assert parse(po, target="ko", fmt="pivot_only").status == "ok"
    assert parse("English instruction: q\n\nEnglish response:", target="ko", fmt="pivot_only").status == "truncated"
    assert parse("nothing", target="ko", fmt="pivot_only").status == "not_found"
    assert parse("안녕하세요", target="ko", fmt="mono").target == "안녕하세요"


def test_non_english_pivot():
    text = render_plug("Was ist das?", "Das ist gut.", "Esto es bueno.", target="es", pivot="de")
    assert text.startswith("Anweisung auf Deutsch: Was ist das?")
    got = parse(text, target="es", pivot="de")
    assert (got.status, got.target) == ("ok", "Esto es bueno.")


def test_errors():
    with pytest.raises(languages.LanguageError):
        render_plug("a", "b", "c", target="zh", pivot="zh")
    with pytest.raises(ValueError):
        render_plug("  ", "b", "c", target="zh")
    with pytest.raises(ValueError):
        parse("x", target="zh", fmt="nope")
    sp = StreamParser(target="zh")
    sp.feed("x")
    sp.close()
    with pytest.raises(RuntimeError):
        sp.feed("y")


# ----------------------------------------------------------------------------------------------
# The fallback for a target header written mid-line (issue 12)

MIDLINE = "English instruction: Why is the sky blue?\n\nEnglish response: Rayleigh scattering. 中文回复：瑞利散射。"


@pytest.mark.parametrize(
    "text, target, want_pr, want_target",
    [
        (MIDLINE, "zh", "Rayleigh scattering.", "瑞利散射。"),
        (MIDLINE.replace("中文回复：", "**中文回复**： "), "zh", "Rayleigh scattering.", "瑞利散射。"),
        (MIDLINE.replace(" 中文回复：", "。中文回复: "), "zh", "Rayleigh scattering.。", "瑞利散射。"),
        ("English response: Blue light scatters more. Risposta in italiano: La luce blu si diffonde di più.\n"
         "Ne sono sicuro.", "it", "Blue light scatters more.", "La luce blu si diffonde di più.\nNe sono sicuro."),
        ("English response: ok **respuesta en español:** vale", "es", "ok", "vale"),
    ],
)
def test_target_header_mid_line_is_found_when_no_line_starts_with_one(text, target, want_pr, want_target):
    got = parse(text, target=target)
    assert (got.status, got.pivot_response, got.target, got.answer) == ("ok", want_pr, want_target, want_target)


def test_mid_line_fallback_limits():
    # A header at a line start wins: the mid-line one stays pivot text.
    both = MIDLINE + "\n\n中文回复：真正的答案。"
    got = parse(both, target="zh")
    assert got.target == "真正的答案。" and got.pivot_response.endswith("中文回复：瑞利散射。")
    # Glued to a Latin word it is not a header; nor is the target name without its colon.
    assert parse("English response: okRisposta in italiano: ciao", target="it").status == "monolingual"
    assert parse("English response: ok. 中文回复 is the header", target="zh").status == "monolingual"
    # Only the pivot response is searched; other formats never fall back.
    assert parse("English instruction: say 中文回复：hi", target="zh").target is None
    assert parse("English response: a. 中文回复：b", target="zh", fmt="pivot_only").pivot_response == "a. 中文回复：b"
    # After the answer, a model that starts over is cut off as usual.
    loop = MIDLINE + "\nEnglish instruction: Why is the sky blue?"
    got = parse(loop, target="zh")
    assert got.target == "瑞利散射。" and got.extra.startswith("English instruction:")
    # Cut by the token limit right after the header: truncated, as with a line-start header.
    assert parse("English response: ok. 中文回复：", target="zh", finished=False).status == "truncated"


def test_mid_line_header_is_never_streamed_as_pivot_text():
    for text in (MIDLINE, MIDLINE.replace("中文回复：", "**中文回复** ："), MIDLINE + "\n\n中文回复：真正的答案。"):
        _check_stream_equals_batch(text, list(range(len(text))), "zh", "en", "plug")
        joined, result = _stream(text, list(text), target="zh")
        assert "中文回" not in joined["pivot_response"] or result.target == "真正的答案。"


_PR_WORDS = st.lists(st.sampled_from(list("ab .,。*_ \t") + ["中文", "回复", "Ris", "posta in italiano", "：", ":"]),
                     max_size=12).map("".join)


@st.composite
def midline_case(draw):
    target = draw(st.sampled_from(["zh", "it", "ko", "es"]))
    header = languages.get(target).response_header.rstrip(":： ")
    form = draw(st.sampled_from(["{h}：", "{h}: ", "**{h}**:", "** {h} **：", "__{h}:__", "{h} :", "{h}"]))
    sep = draw(st.sampled_from([" ", "", ". ", "*", "x", "\t"]))
    text = (f"English instruction: q\n\nEnglish response: {draw(_PR_WORDS)}{sep}"
            f"{form.format(h=draw(st.sampled_from([header, header.upper(), header[:3]])))}{draw(_PR_WORDS)}")
    if draw(st.booleans()):
        text += draw(st.sampled_from(["\n", "\n\n"])) + draw(messy_text)
    return target, text


@SETTINGS
@given(midline_case(), st.lists(st.integers(0, 200), max_size=12), st.booleans())
def test_stream_equals_batch_on_mid_line_headers(case, cuts, finished):
    target, text = case
    _check_stream_equals_batch(text, cuts, target, "en", "plug", finished)
    _check_stream_equals_batch(text, list(range(len(text))), target, "en", "plug", finished)


# --------------------------------------------------------------------------------------------
# One answer record for generate, chat and extract


def test_generate_chat_and_extract_write_one_answer_record():
    from plug_lite import chat, extract, generate
    from plug_lite.engine import TurnStats
    from plug_lite.formats import AnswerRecord

    s = spec.PlugSpec("plug", "zh")
    text = "Sure! Here it is.\n" + PLAIN + "\n中文回复：又一次"
    rec = AnswerRecord.parsed(text, s)
    assert (rec.answer, rec.status, rec.target_response) == ("瑞利散射。", "ok", "瑞利散射。")
    assert (rec.pivot_instruction, rec.pivot_response) == ("Why is the sky blue?", "Rayleigh scattering.")
    assert (rec.format, rec.target, rec.pivot, rec.output) == ("plug", "zh", "en", text)
    assert rec.preamble == "Sure! Here it is." and rec.extra == "中文回复：又一次"
    # generate: one line of an answers file
    gen = {"output": text, "finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": 20, "pieces": None}
    line = generate.answer_record({"id": "q1", "instruction": "天空为什么是蓝色的？"}, gen, spec=s, seconds=1.0,
                                  generator="m", decoding={})
    assert {k: line[k] for k in AnswerRecord.FIELDS} == rec.to_dict()
    assert AnswerRecord.from_dict(line) == AnswerRecord(**{**rec.to_dict(), "preamble": "", "extra": ""})
    # chat: a turn of a session with this spec
    turn = chat.Turn("天空为什么是蓝色的？", text, parse(text, target="zh"), TurnStats(completion_tokens=20), s)
    d = turn.to_dict()
    assert d == {"question": turn.question, **rec.to_dict(), "preamble": rec.preamble, "extra": rec.extra,
                 "stats": d["stats"]} and d["stats"]["completion_tokens"] == 20
    plain = chat.Turn("hi", " hello \n").to_dict()
    assert (plain["answer"], plain["status"], plain["target_response"], plain["format"], plain["target"],
            plain["pivot"]) == ("hello", "plain", "hello", "plain", None, None)
    # extract: the same record added to a record of its own (answer and status under other names)
    out = extract.extract_record({"id": 1, "answer": "theirs", "output": text}, **s.parser_args())
    assert out == {"id": 1, "answer": "theirs", "output": text, **rec.extract_fields()}
    assert (out["extracted"], out["extract_status"], out["extract_preamble"], out["extract_extra"]) == (
        rec.answer, rec.status, rec.preamble, rec.extra)
    # mono writes no pivot, whatever the spec names
    assert AnswerRecord.parsed("안녕하세요", spec.PlugSpec("mono", "ko", "en")).pivot is None


def test_answer_records_before_and_after_the_rename():
    """Answer files written before the language was named ``target`` (``lang`` for the language,
    ``target`` for the text) still load."""
    from plug_lite.formats import AnswerRecord, upgrade_answer

    old = {"id": "1", "answer": "好", "target": "好", "lang": "zh", "pivot": "en", "_where": "a.jsonl:1"}
    new = upgrade_answer(old)
    assert new == {"id": "1", "answer": "好", "pivot": "en", "_where": "a.jsonl:1", "target_response": "好", "target": "zh"}
    assert upgrade_answer(new) is new and old["target"] == "好"  # today's records pass through; nothing mutated
    line = {"id": "2", "instruction": "q", "output": "中文回复：好", "answer": "好", "status": "ok", "target": "好",
            "pivot_instruction": None, "pivot_response": None, "format": "mono", "lang": "zh", "pivot": None}
    rec = AnswerRecord.from_dict(line)
    assert (rec.target, rec.target_response, rec.answer, rec.status, rec.format) == ("zh", "好", "好", "ok", "mono")
    assert AnswerRecord.from_dict(rec.to_dict()) == rec
