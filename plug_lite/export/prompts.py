"""What the checks of step 3 share: the merged model's tokenizer, the end-of-turn token it must stop
on, and a few held-out instructions in the run's target language as the PLUG prompts they render
(system prompt of the run's spec + the instruction, with the inference template)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import templates
from ..runs import RunRecord

__all__ = ["Reference", "HeldOut", "messages"]

# Short instructions for the parity prompts (any text works; these read naturally).
_PROMPTS = {
    "zh": ["请用三句话介绍一下长城。", "怎样才能睡得更好？", "写一首关于秋天的短诗。"],
    "ko": ["서울에 대해 세 문장으로 소개해 주세요.", "잠을 잘 자는 방법은 무엇인가요?", "가을에 관한 짧은 시를 써 주세요."],
    "it": ["Descrivi Roma in tre frasi.", "Come posso dormire meglio?", "Scrivi una breve poesia sull'autunno."],
    "es": ["Describe Madrid en tres frases.", "¿Cómo puedo dormir mejor?", "Escribe un poema corto sobre el otoño."],
}
_PROMPTS_EN = ["Describe the sea in three sentences.", "How can I sleep better?", "Write a short poem about autumn."]


def messages(run: RunRecord, text: str) -> list[dict]:
    """The chat of one held-out prompt: the run's system prompt and the instruction."""
    return [{"role": "system", "content": run.spec.system_prompt()}, {"role": "user", "content": text}]


@dataclass
class Reference:
    """The merged model's tokenizer and the end of turn every file must carry and stop on: the run's
    ``eos_token``, else its template's stop token, else the tokenizer's EOS."""

    tok: Any
    eot_text: str
    eot_id: int

    @classmethod
    def load(cls, run: RunRecord, merged_dir: Path) -> "Reference":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(merged_dir))
        eot_text = run.eos_token or templates.STOP.get(run.chat_template_name or "", None) or tok.eos_token
        return cls(tok, eot_text, tok.convert_tokens_to_ids(eot_text))

    @property
    def pad_id(self) -> int:
        return self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eot_id


@dataclass
class HeldOut:
    """``n`` held-out instructions, their chats rendered by transformers, and those texts' token ids
    (no special tokens added: the same leading BOS llama.cpp adds, so both engines see identical ids)."""

    run: RunRecord
    prompts: list[str]
    texts: list[str]
    ids: list[list[int]]

    @classmethod
    def render(cls, run: RunRecord, tok, n: int) -> "HeldOut":
        prompts = (_PROMPTS.get(run.spec.target) or _PROMPTS_EN)[:n]
        texts = [tok.apply_chat_template(messages(run, p), tokenize=False, add_generation_prompt=True) for p in prompts]
        return cls(run, prompts, texts, [tok(t, add_special_tokens=False)["input_ids"] for t in texts])
