"""GPU check of ``plug_lite.train``: packed vs one-row-per-slot batching, Unsloth vs the qlora
backend, and Unsloth end to end (train -> merge -> GGUF). Run by ``benchmarks/gpu_check.sh`` on a
lent GPU machine (each step its own process); ``--smoke`` runs the same code on CPU with a tiny model.

Steps (``python benchmarks/gpu_check.py STEP ...``):

* ``build``  a random-weight model of a real Qwen2.5 shape (bf16, on the GPU), saved as safetensors;
* ``train``  ``plug_lite.train.train()`` on the shipped sample (zh, PLUG) with the ``ampere`` preset
  and the given backend / batching; records plug_run.json's metrics, the per-step loss, tokens and
  trained tokens, and the steady-state speed (steps after the first);
* ``e2e``    a short Unsloth run of a tiny model, then ``export.merge`` (NF4-aware), the GGUF
  (Q8_0, llama.cpp's converter) with the PLUG keys, and the merged model's greedy token ids on two
  prompts (float32, CPU) so that llama.cpp's output on the GGUF can be compared on another machine;
* ``compare`` (back on a machine with llama-cpp-python) that comparison, and ``plug-lite chat`` on
  the GGUF.

Every step writes ``$OUT/<name>.json`` (rewritten as it goes) and never raises: a failure is recorded.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

OUT = Path(os.environ.get("OUT") or "/tmp/gpu_check_out")
WORK = Path(os.environ.get("GC_WORK") or "/tmp/gc")

SHAPES = {  # Qwen2.5 shapes (real values) and a tiny stand-in
    "1.5b": dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                 intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True),
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=151936, tie_word_embeddings=True),
}
PROMPTS = ["请用三句话介绍一下长城。", "怎样才能睡得更好？"]


class Record:
    def __init__(self, name: str) -> None:
        self.path = OUT / f"{name}.json"
        self.d: dict = {"step": name, "status": "running"}
        self.t0 = time.perf_counter()
        self.save()

    def set(self, **kw) -> None:
        self.d.update(kw)
        self.save()

    def save(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.d, indent=1, default=str, ensure_ascii=False))
        os.replace(tmp, self.path)

    def finish(self, status: str, **kw) -> None:
        self.set(status=status, seconds=round(time.perf_counter() - self.t0, 1), **kw)


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets", "unsloth",
              "unsloth_zoo"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def gpu() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"device": "cpu"}
    p = torch.cuda.get_device_properties(0)
    return {"device": p.name, "capability": list(torch.cuda.get_device_capability(0)),
            "memory_gib": round(p.total_memory / 2**30, 1), "torch_cuda": torch.version.cuda}


def cmd_build(a, rec: Record) -> None:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from plug_lite.models import qwen2_tokenizer_dir

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    tok_dir = qwen2_tokenizer_dir()
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen2Config(**SHAPES[a.shape], max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                      hidden_act="silu", use_sliding_window=False, bos_token_id=None, eos_token_id=eos,
                      pad_token_id=pad)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            model = Qwen2ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, pad
    model.generation_config.bos_token_id = None
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    rec.set(shape=a.shape, params=sum(p.numel() for p in model.parameters()), out=str(out), **gpu())


def _metrics_lines(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.exists() else []


def cmd_train(a, rec: Record) -> None:
    import torch

    from plug_lite import train as T
    from plug_lite.runs import RunRecord

    run = WORK / a.name
    shutil.rmtree(run, ignore_errors=True)
    rec.set(versions=versions(), **gpu(), backend_requested=a.backend, packing=a.packing, batch_size=a.batch_size,
            grad_accum=a.grad_accum, steps_requested=a.steps)
    kw = dict(model=a.model, data="sample", target="zh", format="plug", preset=a.preset, backend=a.backend,
              output_dir=str(run), max_steps=a.steps, save_steps=10**6, preview_rows=1, packing=a.packing)
    if a.batch_size:
        kw["batch_size"] = a.batch_size
    if a.grad_accum:
        kw["grad_accum"] = a.grad_accum
    if a.max_length:
        kw["max_length"] = a.max_length
    if a.gradient_checkpointing is not None:
        kw["gradient_checkpointing"] = a.gradient_checkpointing
    if a.group_by_tokens is not None:
        kw["group_by_tokens"] = a.group_by_tokens
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    T.train(T.TrainConfig(**kw))
    record = RunRecord.load(run)
    lines = _metrics_lines(run)
    steady = None
    if len(lines) > 1:  # after the first step (CUDA warm-up, allocator growth); counters are cumulative
        first, last = lines[0], lines[-1]
        span = last["seconds"] - first["seconds"]
        steady = {"steps": len(lines) - 1, "seconds": round(span, 2),
                  "tokens_per_s": (last["tokens"] - first["tokens"]) / span if span > 0 else None,
                  "trained_tokens_per_s": (last["trained_tokens"] - first["trained_tokens"]) / span if span > 0 else None}
    rec.set(backend=record.backend, metrics=record.metrics.to_dict(), batching=record.data_summary.get("batching"),
            turn_tokens=(record.turn_tokens or {}).get("ids"), steady=steady,
            curve=[{k: l[k] for k in ("step", "loss", "tokens", "trained_tokens", "seconds", "peak_memory_mib",
                                     "peak_reserved_mib")} for l in lines],
            versions_used=record.versions)


def cmd_e2e(a, rec: Record) -> None:
    """Unsloth (or another backend) end to end on a tiny model: train, merge, GGUF, greedy ids."""
    from transformers import AutoTokenizer

    from plug_lite import convert, export, gguf_meta, runs
    from plug_lite import train as T

    run = WORK / a.name
    shutil.rmtree(run, ignore_errors=True)
    rec.set(versions=versions(), **gpu())
    extra = {"max_length": a.max_length} if a.max_length else {}
    T.train(T.TrainConfig(model=a.model, data="sample", target="zh", format="plug", preset=a.preset,
                          backend=a.backend, output_dir=str(run), max_steps=a.steps, save_steps=10**6, preview_rows=0,
                          lr=1e-3, **extra))
    record = runs.RunRecord.load(run, adapter=True)
    rec.set(train_metrics=record.metrics.to_dict(), backend=record.backend, load_in_4bit=record.load_in_4bit,
            adapter_files=sorted(p.name for p in (run / "adapter").iterdir()))
    t = time.perf_counter()
    merged = export.merge(runs.RunRecord.load(run, adapter=True))
    rec.set(merge_s=round(time.perf_counter() - t, 1), merge_mode=json.loads((merged / "plug_merge.json").read_text()))
    raw = run / "raw.gguf"
    gguf = OUT / f"{a.name}-Q8_0.gguf"
    template = AutoTokenizer.from_pretrained(str(merged)).chat_template
    t = time.perf_counter()
    convert.hf_to_gguf(merged, raw, outtype="q8_0", model_name=gguf.stem)
    gguf_meta.write_plug_metadata(raw, gguf, record.spec, chat_template=template)
    rec.set(gguf=gguf.name, gguf_bytes=gguf.stat().st_size, convert_s=round(time.perf_counter() - t, 1))
    if a.backend == "unsloth":
        # the reference ids come from a fresh process (step e2e_ref): Unsloth has patched Qwen2 in this one,
        # and its compiled blocks would be compiled again for a CPU forward
        return
    rec.set(hf_greedy=hf_greedy(merged))


def hf_greedy(merged: Path) -> list[dict]:
    """Greedy ids of the merged model (transformers, CPU, float32) for PROMPTS."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from plug_lite import spec

    tok = AutoTokenizer.from_pretrained(str(merged))
    model = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)
    system = spec.system_prompt("plug", "zh", "en")
    greedy = []
    for p in PROMPTS:
        text = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": p}],
                                       tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            y = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               do_sample=False, max_new_tokens=16, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                               pad_token_id=tok.pad_token_id)
        greedy.append({"prompt": p, "prompt_ids": ids, "ids": y[0, len(ids):].tolist()})
    return greedy


def cmd_e2e_ref(a, rec: Record) -> None:
    """The merged model's greedy ids, in a process that has not imported Unsloth (``--model``: the e2e run)."""
    rec.set(versions=versions(), hf_greedy=hf_greedy(Path(a.model) / "merged"))


def cmd_compare(a, rec: Record) -> None:
    """Back on a machine with llama-cpp-python: the e2e GGUF's greedy ids against the merged model's
    (``--model``: the folder holding e2e.json and the GGUF), and a one-shot ``plug-lite chat``."""
    from plug_lite import chat
    from plug_lite.engine import LlamaEngine
    from plug_lite.gguf_meta import read_metadata

    folder = Path(a.model)
    e2e = json.loads((folder / "e2e.json").read_text())
    if "hf_greedy" not in e2e:  # Unsloth runs: the reference came from its own step
        e2e["hf_greedy"] = json.loads((folder / "e2e_ref.json").read_text())["hf_greedy"]
    gguf = folder / e2e["gguf"]
    md = read_metadata(gguf)
    eng = LlamaEngine(gguf, ctx=1024, gpu_layers=0)
    try:
        eos = eng.llm._model.token_eos()
        rows = []
        for g in e2e["hf_greedy"]:
            ids = eng.greedy(g["prompt_ids"], len(g["ids"]), {eos})
            rows.append({"prompt": g["prompt"], "hf": g["ids"], "llama_cpp": list(ids), "identical": list(ids) == g["ids"]})
    finally:
        eng.close()
    turn = chat.one_shot(str(gguf), PROMPTS[0], max_new_tokens=24)
    rec.set(gguf=gguf.name, plug_keys={k: md.get(k) for k in ("plug.format", "plug.target", "plug.pivot")},
            template=bool(md.get("tokenizer.chat_template")), greedy=rows,
            identical=sum(r["identical"] for r in rows), chat={k: turn.get(k) for k in ("status", "output", "stats")})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("build", "train", "e2e", "e2e_ref", "compare"))
    ap.add_argument("--name", required=True)
    ap.add_argument("--shape", default="1.5b")
    ap.add_argument("--out")
    ap.add_argument("--model")
    ap.add_argument("--backend", default="qlora")
    ap.add_argument("--preset", default="ampere")
    ap.add_argument("--packing", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--grad-accum", type=int)
    ap.add_argument("--max-length", type=int)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--group-by-tokens", action=argparse.BooleanOptionalAction, default=None)
    a = ap.parse_args()
    rec = Record(a.name)
    if os.environ.get("GC_TIMEOUT"):  # a step about to be killed leaves its stacks in the log
        faulthandler.dump_traceback_later(max(5, int(os.environ["GC_TIMEOUT"]) - 15), exit=False)
    try:
        {"build": cmd_build, "train": cmd_train, "e2e": cmd_e2e, "e2e_ref": cmd_e2e_ref,
         "compare": cmd_compare}[a.step](a, rec)
        rec.finish("ok")
        return 0
    except BaseException as e:  # noqa: BLE001 - everything goes into the record
        traceback.print_exc()
        rec.finish("failed", error=f"{type(e).__name__}: {e}"[:3000], traceback=traceback.format_exc()[-6000:])
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
