"""``plug-lite export RUN_DIR``: merge the LoRA, convert to GGUF, quantize, check parity.

Steps, each written to a temporary name and renamed:

1. **Merge** the adapter of ``RUN_DIR/adapter`` into a copy of the base model on the CPU. The
   arithmetic is done in float32 when an fp32 copy fits in 40% of the RAM (else in the base's
   16-bit dtype); the merged model is saved in the base checkpoint's dtype (bf16 or fp16; a float32
   base such as the tiny test models or the demo's dequantized Gemma stays float32). For a QLoRA run
   (``load_in_4bit``) the adapter was trained against NF4-rounded base weights, so by default the
   base Linear weights are NF4-quantized and dequantized with bitsandbytes (same block size,
   quant type and double quantization as training) before the LoRA delta is added; this is the
   approach Axolotl takes for QLoRA merges. ``--plain-merge`` adds the delta to the original
   weights instead. Nothing is ever merged into 4-bit weights. Output: ``RUN_DIR/merged/``.
2. **Convert** the merged folder with llama.cpp's converter (:func:`plug_lite.convert.hf_to_gguf`)
   to F16 (or BF16, or Q8_0 directly), then rewrite it with llama.cpp's own gguf-py to add the
   inference chat template and the PLUG keys (``plug.format``, ``plug.target``, ``plug.pivot``,
   ``plug.think``), so ``plug-lite chat`` needs no flags. Quantized files are made from that
   file and inherit its metadata (``llama_model_quantize`` copies every key; checked on output).
3. **Adapter GGUF** (llama.cpp's ``convert_lora_to_gguf.py``): a few MB, used with
   ``llama_cpp.Llama(base.gguf, lora_path=...)``. ``--with-base`` also writes the base's F16 GGUF.
4. **Verify** (on by default): the template, BOS/EOS and PLUG keys in the file, the token ids of a
   rendered PLUG prompt in transformers and llama.cpp, greedy text of the merged model against the
   F16 GGUF, and of every quantized file against both the merged and the base model (a small
   fine-tune can be rounded away by quantization; see NOTES). **Stops**: the same greedy answers to
   three held-out instructions run on until the end-of-turn token or ``--stop-budget`` tokens; how
   many ended their turn is reported for the merged model and every GGUF, and a model that does not
   stop gets a loud warning. Report in ``RUN_DIR/export_report.json``.

A run that trained embedding rows of turn tokens (:mod:`plug_lite.turn_tokens`) gets no adapter
GGUF: llama.cpp's LoRA adapters hold LoRA pairs only, and an adapter without those rows would not
stop. The report says so (``adapter_not_written``).

Importance matrices are not computed: llama-cpp-python can *pass* an imatrix to the quantizer but
has no API to *collect* one; that needs llama.cpp's ``llama-imatrix`` binary (build llama.cpp,
run ``llama-imatrix -m F16.gguf -f plug_text.txt``, then ``llama-quantize --imatrix``).

File names follow the ggml convention: ``<Base>-<Size>-PLUG-<lang>-<QUANT>.gguf`` (``Mono`` /
``PivotOnly`` for the other formats, ``...-LoRA-F16.gguf`` for the adapter).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import convert, gguf_meta, templates, toolchain
from ..cli import run
from ..engine import Greedy, LlamaEngine
from ..io import UserError, check_disk_space, write_json
from ..runs import EXPORT_REPORT, gguf_name, load_run, resolve_base, run_spec
from ..spec import PLUG_KEYS

__all__ = ["merge", "verify", "main", "cli"]

# Short instructions for the parity prompts (any text works; these read naturally).
_PROMPTS = {
    "zh": ["请用三句话介绍一下长城。", "怎样才能睡得更好？", "写一首关于秋天的短诗。"],
    "ko": ["서울에 대해 세 문장으로 소개해 주세요.", "잠을 잘 자는 방법은 무엇인가요?", "가을에 관한 짧은 시를 써 주세요."],
    "it": ["Descrivi Roma in tre frasi.", "Come posso dormire meglio?", "Scrivi una breve poesia sull'autunno."],
    "es": ["Describe Madrid en tres frases.", "¿Cómo puedo dormir mejor?", "Escribe un poema corto sobre el otoño."],
}
_PROMPTS_EN = ["Describe the sea in three sentences.", "How can I sleep better?", "Write a short poem about autumn."]


# --------------------------------------------------------------------------------------------
# Merge


def _torch_dtype_of(base: Path):
    import torch

    cfg = json.loads((base / "config.json").read_text(encoding="utf-8"))
    name = cfg.get("torch_dtype") or cfg.get("dtype") or (cfg.get("text_config") or {}).get("torch_dtype")
    return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(str(name), torch.float32)


def nf4_round_trip(model, bnb_4bit: dict | None) -> int:
    """Replace every Linear weight that bitsandbytes quantizes (all but the output head) with its
    NF4 quantize -> dequantize round trip, as the QLoRA adapter saw it. Returns the count."""
    import torch
    from bitsandbytes import functional as bnbf

    cfg = bnb_4bit or {}
    quant_type = cfg.get("quant_type", "nf4")
    double = bool(cfg.get("double_quant", True))
    head = model.get_output_embeddings()
    n = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if not isinstance(mod, torch.nn.Linear) or mod is head or name.split(".")[-1] == "lm_head":
                continue
            w = mod.weight.data
            # Params4bit defaults: blocksize 64; compress_statistics = double quantization.
            q, state = bnbf.quantize_4bit(w.contiguous(), blocksize=64, compress_statistics=double, quant_type=quant_type)
            mod.weight.data = bnbf.dequantize_4bit(q, state).to(w.dtype).reshape(w.shape)
            n += 1
    return n


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _replace_dir(tmp: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def merge(meta: dict, *, out_dir: str | os.PathLike | None = None, plain: bool = False) -> Path:
    """Merge the run's adapter into a 16-bit (or fp32) copy of its base; returns the folder.
    Reuses an existing merge made the same way from the same adapter."""
    run = Path(meta["_dir"])
    out = Path(out_dir) if out_dir else run / "merged"
    qlora = bool(meta.get("load_in_4bit"))
    mode = "nf4" if qlora and not plain else "plain"
    adapter_file = run / "adapter" / "adapter_model.safetensors"
    stamp = {"mode": mode, "adapter_mtime": adapter_file.stat().st_mtime, "adapter_size": adapter_file.stat().st_size}
    marker = out / "plug_merge.json"
    if marker.is_file() and json.loads(marker.read_text()).get("stamp") == stamp:
        print(f"merge: reusing {out}", file=sys.stderr)
        return out
    base = resolve_base(meta)
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    save_dtype = _torch_dtype_of(base)
    n_bytes = convert.model_bytes(base)
    check_disk_space(out.parent, int(n_bytes * (2 if save_dtype == torch.float32 else 1)), "the merged model")
    # float32 arithmetic when an fp32 copy fits in 40% of the RAM (models up to a few billion
    # parameters on Colab); otherwise the base's own 16-bit dtype, as PEFT merges on a GPU.
    fp32_bytes = n_bytes * (1 if save_dtype == torch.float32 else 2)
    work_dtype = torch.float32 if fp32_bytes < 0.4 * _ram_bytes() else save_dtype
    t0 = time.time()
    print(f"merge: loading {base} ({str(work_dtype).replace('torch.', '')}, CPU)"
          f"{' and NF4-rounding its Linear weights' if mode == 'nf4' else ''}", file=sys.stderr)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=work_dtype, device_map="cpu")
    if mode == "nf4":
        nf4_round_trip(model, meta.get("bnb_4bit"))
    model = PeftModel.from_pretrained(model, str(run / "adapter"))
    model = model.merge_and_unload()
    model = model.to(save_dtype)
    tok_dir = run / "tokenizer" if (run / "tokenizer").is_dir() else base
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if out.parent.exists() else None))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        write_json(tmp / "plug_merge.json", {"stamp": stamp, "base": str(base), "dtype": str(save_dtype).replace("torch.", "")})
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"merge: {mode} merge saved to {out} ({str(save_dtype).replace('torch.', '')}, {time.time() - t0:.1f} s)", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------
# Parity


def _messages(meta: dict, text: str) -> list[dict]:
    return [{"role": "system", "content": run_spec(meta).system_prompt()}, {"role": "user", "content": text}]


def _prompts(meta: dict, n: int) -> list[str]:
    return (_PROMPTS.get(meta["target"]) or _PROMPTS_EN)[:n]


def _greedy_runs(path: Path, prompts: list[list[int]], max_new: int, stop: set[int], *, lora: Path | None = None):
    """Greedy answers of a GGUF (with an adapter GGUF over it) to each prompt."""
    eng = LlamaEngine(path, ctx=1024, lora=lora)
    try:
        return [eng.greedy(ids, max_new, stop) for ids in prompts]
    finally:
        eng.close()


def _hf_greedy(model, prompt_ids: list[list[int]], max_new: int, eos: int, pad: int) -> list[Greedy]:
    import torch

    outs = []
    with torch.no_grad():
        for ids in prompt_ids:
            x = torch.tensor([ids], device=model.device)
            y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=max_new,
                               eos_token_id=eos, pad_token_id=pad)
            gen = Greedy(y[0, len(ids):].tolist())
            if eos in gen:
                del gen[gen.index(eos):]
                gen.stopped = True
            outs.append(gen)
    return outs


def _stops(outs: list[Greedy], budget: int) -> dict:
    return {"stopped": sum(o.stopped for o in outs), "prompts": len(outs), "budget": budget,
            "tokens": [len(o) for o in outs]}


def _agree(a: list[int], b: list[int]) -> float:
    """Common-prefix length over the longer length (1.0: identical)."""
    if not a and not b:
        return 1.0
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / max(len(a), len(b))


def verify(meta: dict, merged_dir: Path, files: dict[str, Path], *, adapter_gguf: Path | None = None,
           base_gguf: Path | None = None, n_prompts: int = 3, max_new_tokens: int = 32,
           stop_budget: int = 256) -> dict:
    """Parity of the exported files with the merged transformers model, and whether each ends its
    turn (see the module doc). Greedy answers to ``n_prompts`` held-out instructions run until the
    end-of-turn token or ``stop_budget`` tokens; parity compares their first ``max_new_tokens``.
    Raises :class:`UserError` on a template, EOS or metadata mismatch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report: dict[str, Any] = {"checks": {}, "greedy": {}, "stops": {}, "warnings": []}
    budget = max(stop_budget, max_new_tokens)
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    template = tok.chat_template
    eot_text = meta.get("eos_token") or templates.STOP.get(meta.get("chat_template_name") or "", None) or tok.eos_token
    eot_id = tok.convert_tokens_to_ids(eot_text)
    ref_name = next(iter(files))
    ref = files[ref_name]

    # 1. metadata of every file
    want = run_spec(meta).gguf_fields()
    for name, path in files.items():
        md = gguf_meta.read_metadata(path)
        for k, v in want.items():
            if md.get(k) != v:
                raise UserError(f"{path.name}: metadata {k} is {md.get(k)!r}, expected {v!r}")
        if md.get("tokenizer.chat_template") != template:
            raise UserError(f"{path.name}: tokenizer.chat_template differs from the run's inference template")
        if md.get("tokenizer.ggml.eos_token_id") != eot_id:
            raise UserError(f"{path.name}: EOS id {md.get('tokenizer.ggml.eos_token_id')} is not the template's end of turn {eot_text!r} ({eot_id})")
        if tok.bos_token_id is not None and md.get("tokenizer.ggml.add_bos_token") and md.get("tokenizer.ggml.bos_token_id") != tok.bos_token_id:
            raise UserError(f"{path.name}: BOS id {md.get('tokenizer.ggml.bos_token_id')} differs from the tokenizer's ({tok.bos_token_id})")
        if tok.bos_token_id is None and md.get("tokenizer.ggml.add_bos_token"):
            raise UserError(f"{path.name}: llama.cpp would add a BOS token the model was not trained with")
    report["checks"].update(template="ok", eos="ok", bos="ok", plug_metadata="ok", eos_id=eot_id, eos_token=eot_text)

    # 2. rendered prompt and token ids
    prompts = _prompts(meta, n_prompts)
    texts = [tok.apply_chat_template(_messages(meta, p), tokenize=False, add_generation_prompt=True) for p in prompts]
    hf_ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    # Same leading BOS llama.cpp adds (add_bos_token) so both engines see identical ids.
    eng = LlamaEngine(ref, ctx=1024)
    try:
        llm = eng.llm
        m = llm._model
        if m.token_eos() != eot_id:
            raise UserError(f"{ref.name}: llama.cpp's EOS id {m.token_eos()} is not the template's end of turn {eot_text!r} ({eot_id})")
        for p, t, ids in zip(prompts, texts, hf_ids):
            rendered, _ = eng.format(_messages(meta, p))  # llama.cpp's Jinja formatter on the GGUF's template
            if rendered != t:
                raise UserError(f"{ref.name}: llama.cpp renders the chat template differently from transformers (prompt {p!r})")
            if llm.tokenize(t.encode("utf-8"), add_bos=False, special=True) != ids:
                raise UserError(f"{ref.name}: llama.cpp tokenizes the rendered PLUG prompt differently from transformers")
        report["checks"]["prompt_tokens"] = "ok"
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(m.model)
        if not llama_cpp.llama_vocab_is_eog(vocab, eot_id):
            raise UserError(f"{ref.name}: llama.cpp does not stop generation at {eot_text!r}")
        report["checks"]["stops_at_eos"] = "ok"
        ref_out = [eng.greedy(ids, budget, {eot_id}) for ids in hf_ids]
    finally:
        eng.close()

    # 3. greedy text: merged transformers model vs each GGUF; quantized files vs the base too
    # float32 on the CPU; on a GPU the checkpoint's own dtype (a float32 file stays float32)
    gpu = torch.cuda.is_available()
    hf_kw = {"dtype": "auto", "device_map": "cuda"} if gpu else {"dtype": torch.float32}
    model = AutoModelForCausalLM.from_pretrained(str(merged_dir), **hf_kw)
    pad = tok.pad_token_id if tok.pad_token_id is not None else eot_id
    merged_full = _hf_greedy(model, hf_ids, budget, eot_id, pad)
    merged_out = [o[:max_new_tokens] for o in merged_full]
    report["stops"]["merged"] = _stops(merged_full, budget)
    report["stops"][ref_name] = _stops(ref_out, budget)
    ref_out = [o[:max_new_tokens] for o in ref_out]
    del model
    base_out = None
    base_dir = resolve_base(meta)
    base_model = AutoModelForCausalLM.from_pretrained(str(base_dir), **hf_kw)
    base_out = _hf_greedy(base_model, hf_ids, max_new_tokens, eot_id, pad)
    del base_model
    differs = [i for i, (a, b) in enumerate(zip(merged_out, base_out)) if a != b]
    report["fine_tune_visible_on"] = f"{len(differs)}/{len(prompts)} prompts (merged greedy text differs from the base's)"

    def score(outs: list[list[int]]) -> dict:
        vs_m = [_agree(a, b) for a, b in zip(outs, merged_out)]
        vs_b = [_agree(a, b) for a, b in zip(outs, base_out)]
        return {"identical_to_merged": sum(a == b for a, b in zip(outs, merged_out)), "prompts": len(outs),
                "agreement_with_merged": round(sum(vs_m) / len(vs_m), 3),
                "agreement_with_base": round(sum(vs_b) / len(vs_b), 3),
                "text": tok.decode(outs[0], skip_special_tokens=False)}

    report["greedy"][ref_name] = score(ref_out)
    for name, path in files.items():
        if name == ref_name:
            continue
        full = _greedy_runs(path, hf_ids, budget, {eot_id})
        report["stops"][name] = _stops(full, budget)
        outs = [o[:max_new_tokens] for o in full]
        s = report["greedy"][name] = score(outs)
        if differs:
            like_base = sum(_agree(outs[i], base_out[i]) > _agree(outs[i], merged_out[i]) for i in differs)
            s["closer_to_base_on"] = like_base
            if like_base * 2 > len(differs):
                report["warnings"].append(
                    f"{name} answers more like the untuned base than the merged model on {like_base}/{len(differs)} prompts: "
                    "quantization erased the fine-tune; ship "
                    + ("F16" if name.upper() == "Q8_0" else "Q8_0 (or F16)")
                    + " or the adapter GGUF on a base GGUF instead")
    if adapter_gguf and base_gguf:
        full = _greedy_runs(base_gguf, hf_ids, budget, {eot_id}, lora=adapter_gguf)
        report["stops"]["adapter_on_base"] = _stops(full, budget)
        report["greedy"]["adapter_on_base"] = score([o[:max_new_tokens] for o in full])
        if meta.get("load_in_4bit"):
            report["adapter_note"] = ("QLoRA run: the adapter GGUF adds the LoRA to the unrounded base, the merged model "
                                      "to the NF4-rounded one; small differences between them are expected")
    for name, st in report["stops"].items():
        if st["stopped"] < st["prompts"]:
            report["warnings"].append(
                f"{name} did not end its turn within {budget} tokens on {st['prompts'] - st['stopped']}/{st['prompts']} "
                f"held-out prompts: its answers will run to the token limit (train longer or with more rows; "
                f"see 'turn_tokens' in plug_run.json)")
    report["merged_text"] = tok.decode(merged_full[0], skip_special_tokens=False)
    ref_score = report["greedy"][ref_name]
    if ref_score["identical_to_merged"] < ref_score["prompts"]:
        report["warnings"].append(f"{ref_name}: greedy text differs from the merged transformers model on "
                                  f"{ref_score['prompts'] - ref_score['identical_to_merged']}/{ref_score['prompts']} prompts")
    return report


# --------------------------------------------------------------------------------------------
# The command


def adapter_refusal(adapter_dir: Path) -> str | None:
    """Why the adapter cannot become a llama.cpp LoRA GGUF, or None when it can.

    llama.cpp's adapter format holds LoRA A/B pairs only; the rows a run trains with PEFT's
    trainable tokens (the turn tokens of a base model, see :mod:`plug_lite.turn_tokens`) are full
    embedding rows, and its converter stops on them. An adapter without them would lose what made
    the model stop, so none is written."""
    cfg_path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    rows = cfg.get("trainable_token_indices")
    if not rows:
        return None
    ids = sorted({i for v in (rows.values() if isinstance(rows, dict) else [rows]) for i in v})
    return (f"the run trained the embedding rows of tokens {ids} (turn tokens the base had not learned), which a "
            "llama.cpp LoRA adapter cannot carry; use the merged GGUF files")


def _check_quants(quants) -> list[str]:
    out = []
    for q in quants:
        key = q.upper()
        if key not in convert.QUANT_TYPES:
            raise UserError(f"unknown quant type {q!r}; expected one of {', '.join(convert.QUANT_TYPES)}")
        if key not in out:
            out.append(key)
    return out


def main(
    run_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike = "gguf",
    quants: list[str] | tuple[str, ...] = ("Q4_K_M",),
    outtype: str = "f16",
    plain_merge: bool = False,
    adapter: bool = True,
    with_base: bool = False,
    verify_parity: bool = True,
    n_prompts: int = 3,
    max_new_tokens: int = 32,
    stop_budget: int = 256,
) -> dict:
    """Export a run; returns the report (also saved as ``RUN_DIR/export_report.json``).

    Args:
        run_dir: a plug-lite train run directory (plug_run.json, adapter/, tokenizer/)
        out_dir: where the GGUF files go
        quants: quant type, repeatable (default Q4_K_M); see convert.QUANT_TYPES
        outtype: the converter's output: f16, bf16 or q8_0
        plain_merge: QLoRA runs: merge into the original weights, not the NF4-rounded ones
        adapter: write the adapter GGUF too
        with_base: also write the base model's F16 GGUF (for the adapter GGUF)
        verify_parity: check parity
        n_prompts: parity prompts
        max_new_tokens: tokens compared by the parity check
        stop_budget: the stops check: each held-out answer must end its turn within this many tokens
    """
    meta = load_run(run_dir)
    run = Path(meta["_dir"])
    quants = _check_quants(quants)
    outtype = outtype.lower()
    if outtype not in ("f16", "bf16", "q8_0"):
        raise UserError(f"unknown --outtype {outtype!r}; expected f16, bf16 or q8_0")
    if outtype == "q8_0" and any(q != "Q8_0" for q in quants):
        raise UserError("--outtype q8_0 writes the Q8_0 file directly; other quant types need an f16/bf16 file")
    out = Path(out_dir).resolve()
    base_dir = resolve_base(meta)
    toolchain.script("convert_hf_to_gguf.py")  # fail early (offline, no sdist) before the slow merge
    import llama_cpp  # noqa: F401  (fail early when llama-cpp-python is missing)

    merged = merge(meta, plain=plain_merge)
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(str(merged)).chat_template
    if not template:
        raise UserError(f"{run / 'tokenizer'}: no chat template saved with the run's tokenizer")
    plug = dict(spec=run_spec(meta), chat_template=template)

    # Everything is written into a hidden staging folder beside the final files and moved there
    # only when the parity check passed: a failed export leaves no file under a final name.
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".export.", suffix=".tmp", dir=out))
    try:
        files: dict[str, Path] = {}
        ref_key = outtype.upper()
        ref_path = stage / gguf_name(meta, ref_key)
        raw = stage / f".{ref_path.name}.raw"
        t0 = time.time()
        print(f"convert: {merged} -> {ref_path} ({ref_key})", file=sys.stderr)
        try:
            convert.hf_to_gguf(merged, raw, outtype=outtype, model_name=ref_path.stem)
            gguf_meta.write_plug_metadata(raw, ref_path, **plug)
        finally:
            raw.unlink(missing_ok=True)
        files[ref_key] = ref_path
        timings = {"convert_s": round(time.time() - t0, 1)}
        for q in quants:
            if q == ref_key:
                continue
            dst = stage / gguf_name(meta, q)
            print(f"quantize: {q} -> {dst}  ({convert.QUANT_TYPES[q]})", file=sys.stderr)
            t0 = time.time()
            with _quiet_stderr(f"quantizing to {q}"):
                convert.quantize(ref_path, dst, q)
            timings[f"quantize_{q}_s"] = round(time.time() - t0, 1)
            md = gguf_meta.read_metadata(dst)
            if any(md.get(k) is None for k in PLUG_KEYS) or md.get("tokenizer.chat_template") != template:
                gguf_meta.write_plug_metadata(dst, dst, **plug)  # the quantizer dropped keys: add them back
            files[q] = dst

        adapter_path = base_path = None
        refused = adapter_refusal(run / "adapter") if adapter else None
        if refused:
            print(f"adapter: not written: {refused}", file=sys.stderr)
            adapter = False
        if adapter:
            adapter_path = stage / gguf_name(meta, "F16", kind="adapter")
            raw = stage / f".{adapter_path.name}.raw"
            print(f"adapter: {run / 'adapter'} -> {adapter_path}", file=sys.stderr)
            t0 = time.time()
            try:
                convert.lora_to_gguf(run / "adapter", base_dir, raw)
                gguf_meta.write_plug_metadata(raw, adapter_path, **plug)
            finally:
                raw.unlink(missing_ok=True)
            timings["adapter_s"] = round(time.time() - t0, 1)
        if with_base:
            base_path = stage / gguf_name(meta, "F16", kind="base")
            print(f"base: {base_dir} -> {base_path}", file=sys.stderr)
            t0 = time.time()
            convert.hf_to_gguf(base_dir, base_path, outtype="f16")
            timings["base_convert_s"] = round(time.time() - t0, 1)
        for p in [*files.values(), adapter_path, base_path]:
            if p is not None:  # mkstemp made them 0600; these files are meant to be shared
                os.chmod(p, 0o644 & ~_umask())

        report: dict[str, Any] = {
            "run_dir": str(run.resolve()), "merged_dir": str(merged.resolve()),
            "merge": json.loads((merged / "plug_merge.json").read_text())["stamp"]["mode"],
            "files": {k: {"path": str(out / v.name), "bytes": v.stat().st_size, "note": convert.QUANT_TYPES.get(k, "")} for k, v in files.items()},
            "adapter_gguf": str(out / adapter_path.name) if adapter_path else None,
            "adapter_not_written": refused,
            "base_gguf": str(out / base_path.name) if base_path else None,
            "imatrix": "not computed: needs llama.cpp's llama-imatrix binary (no API in llama-cpp-python)",
            "timings": timings,
        }
        if verify_parity:
            t0 = time.time()
            try:
                report["verify"] = verify(meta, merged, files, adapter_gguf=adapter_path, base_gguf=base_path,
                                          n_prompts=n_prompts, max_new_tokens=max_new_tokens, stop_budget=stop_budget)
            except UserError as e:
                report["verify"] = {"error": str(e)}
                write_json(run / EXPORT_REPORT, report)
                raise UserError(f"parity check failed (no file kept): {e}") from None
            timings["verify_s"] = round(time.time() - t0, 1)
        for p in [*files.values(), adapter_path, base_path]:
            if p is not None:
                os.replace(p, out / p.name)
        write_json(run / EXPORT_REPORT, report)
        _print_report(report)
        return report
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def _quiet_stderr(what: str):
    """Hold back llama.cpp's C-level log (printed to fd 2) unless ``what`` fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            tail = log.read().decode("utf-8", "replace").strip().splitlines()[-20:]
            print(f"{what}: llama.cpp log tail:\n" + "\n".join(tail), file=sys.stderr)
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _print_report(report: dict) -> None:
    print("exported:")
    for k, v in report["files"].items():
        print(f"  {k:<7} {v['bytes'] / 2**20:8.1f} MiB  {v['path']}")
        if v["note"]:
            print(f"          {v['note']}")
    if report.get("adapter_not_written"):
        print(f"  adapter not written: {report['adapter_not_written']}")
    if report.get("adapter_gguf"):
        print(f"  adapter {Path(report['adapter_gguf']).stat().st_size / 2**20:8.1f} MiB  {report['adapter_gguf']}")
    v = report.get("verify")
    if v:
        print("parity: template, BOS/EOS, PLUG metadata and prompt tokens match")
        for name, s in v["greedy"].items():
            print(f"  {name:<16} greedy identical to merged on {s['identical_to_merged']}/{s['prompts']} prompts; "
                  f"agreement merged {s['agreement_with_merged']:.2f}, base {s['agreement_with_base']:.2f}")
        print(f"  fine-tune visible on {v['fine_tune_visible_on']}")
        for name, st in v.get("stops", {}).items():
            print(f"  {name:<16} ended its turn on {st['stopped']}/{st['prompts']} held-out prompts "
                  f"within {st['budget']} tokens (answer lengths {st['tokens']})")
        for w in v["warnings"]:
            print(f"WARNING: {w}", file=sys.stderr)
    print(f"imatrix: {report['imatrix']}")


def cli(argv: list[str] | None = None) -> int:
    quants = "; ".join(f"{k}: {v}" for k, v in convert.QUANT_TYPES.items())
    return run(main, argv, prog="plug-lite export", positional=("run_dir",),
               names={"quants": "--quant", "verify_parity": "--verify", "n_prompts": "--prompts"},
               choices={"outtype": ("f16", "bf16", "q8_0")},
               extra={"quants": {"metavar": "TYPE", "help": f"quant type, repeatable (default Q4_K_M): {quants}"}})
