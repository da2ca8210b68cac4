"""A tiny GGUF whose greedy output follows the PLUG format (for chat/generate tests).

Recipe: the random hidden-64 Qwen2 (plug_lite.models.tiny_qwen2) fully fine-tuned with plain
torch on a few PLUG conversations (system + user via the ChatML template -> the completion of
formats.render_plug, ending with <|im_end|>) until greedy decoding reproduces them; converted to
F16 with plug_lite.convert.hf_to_gguf; PLUG metadata (plug.format/target/pivot/think) written
with plug_lite.gguf_meta.write_plug_metadata. Cached under the plug_lite cache, keyed by a hash of
the training recipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from plug_lite import formats, spec
from plug_lite.toolchain import cache_dir

TARGET, PIVOT = "zh", "en"
CONVERSATIONS = [
    ("你好吗？", "How are you?", "I am fine, thank you.", "我很好，谢谢。"),
    ("天空是什么颜色？", "What color is the sky?", "The sky is blue.", "天空是蓝色的。"),
    ("一加一等于几？", "What is one plus one?", "One plus one is two.", "一加一等于二。"),
]
#: One more conversation whose answer holds characters whose UTF-8 bytes span several tokens of
#: the Qwen2 vocabulary (龘 齾 퓛 뷃 🦩: two tokens each, 🫠: three), for the serve tests.
RARE = ("写几个难字。", "Write a few rare characters.", "Here are some.", "龘齾，퓛뷃，🫠🦩。")
STEPS, LR, SEED = 600, 1e-2, 0
RECIPE_VERSION = 2


def rows(fmt: str = "plug", conversations=CONVERSATIONS) -> list[dict]:
    system = spec.system_prompt(fmt, TARGET, PIVOT)
    out = []
    for q, pi, pr, t in conversations:
        completion = formats.render(fmt, target=TARGET, pivot=PIVOT, pivot_instruction=pi,
                                    pivot_response=pr, target_response=t)
        out.append({"system": system, "user": q, "completion": completion, "target": t})
    return out


def _recipe_key(conversations=CONVERSATIONS) -> str:
    recipe = json.dumps([RECIPE_VERSION, conversations, STEPS, LR, SEED, rows("plug", conversations)], ensure_ascii=False)
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _train(base: Path, out: Path, conversations=CONVERSATIONS) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(SEED)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), torch_dtype=torch.float32)
    seqs = []
    for r in rows("plug", conversations):
        prompt = tok.apply_chat_template(
            [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["user"]}],
            tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        c_ids = tok(r["completion"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        seqs.append((p_ids, c_ids))
    # One right-padded batch; the LM head runs only where a completion token is predicted (the
    # 151,936-token head dominates the cost on CPU).
    width = max(len(p) + len(c) for p, c in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    pos, labels = [], []
    for b, (p, c) in enumerate(seqs):
        full = p + c
        ids[b, : len(full)] = torch.tensor(full)
        mask[b, : len(full)] = 1
        for j in range(len(p), len(full)):
            pos.append((b, j - 1))
            labels.append(full[j])
    rows_idx = torch.tensor([b for b, _ in pos])
    cols_idx = torch.tensor([j for _, j in pos])
    labels = torch.tensor(labels)
    # A sampled softmax (the completion's tokens, tokens that beat them on a full check, 2048
    # random ones per step) keeps each step cheap; every 20 steps a full-vocabulary check stops
    # training once greedy decoding reproduces every completion token with a clear margin.
    vocab = model.lm_head.weight.shape[0]
    keep = set(labels.tolist())
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    model.train()
    for step in range(STEPS):
        opt.zero_grad()
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[rows_idx, cols_idx]
        cand = torch.unique(torch.cat([torch.tensor(sorted(keep)), torch.randint(0, vocab, (2048,))]))
        logits = hidden @ model.lm_head.weight[cand].T
        loss = torch.nn.functional.cross_entropy(logits, torch.searchsorted(cand, labels))
        loss.backward()
        opt.step()
        if step % 20 == 19:
            with torch.no_grad():
                full = model.lm_head(hidden.detach())
                right = full.gather(1, labels[:, None])
                full.scatter_(1, labels[:, None], float("-inf"))
                rival = full.max(-1)
                if bool((right[:, 0] - rival.values > 4.0).all()):
                    break
                keep |= set(rival.indices.tolist())
    model.eval()
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))


def build(base_model: Path, conversations=CONVERSATIONS) -> dict[str, Path]:
    """{"hf": trained model folder, "plain": F16 GGUF without PLUG keys, "plug": with them},
    trained on ``conversations`` ((question, pivot instruction, pivot response, target answer))."""
    from plug_lite.convert import hf_to_gguf

    root = cache_dir() / "fixtures" / f"plug-tiny-{_recipe_key(list(conversations))}"
    paths = {"hf": root / "hf", "plain": root / "plain-f16.gguf", "plug": root / "plug-tiny-zh.gguf"}
    if all(p.exists() for p in paths.values()):
        return paths
    root.mkdir(parents=True, exist_ok=True)
    if not (paths["hf"] / "model.safetensors").exists():
        tmp = root / f"hf.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _train(base_model, tmp, conversations)
        shutil.rmtree(paths["hf"], ignore_errors=True)
        os.replace(tmp, paths["hf"])
    if not paths["plain"].exists():
        hf_to_gguf(paths["hf"], paths["plain"], outtype="f16")
    from plug_lite.gguf_meta import write_plug_metadata

    write_plug_metadata(paths["plain"], paths["plug"], spec.PlugSpec("plug", TARGET, PIVOT))
    return paths
