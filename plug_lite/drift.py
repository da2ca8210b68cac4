"""How far a quantized GGUF drifts from its F16 reference, by section and language of PLUG text.

The same held-out conversations are evaluated by the reference file (the export's F16/BF16) and
by the quantized file, and at every position of the PLUG answer the two next-token distributions
are compared (llama-cpp-python logits, float64 arithmetic):

* **KL divergence** KL(P_ref || P_quant) per token, its mean and 99th percentile;
* **top-1 agreement**: how often both put the same token first;
* **perplexity ratio**: exp(mean NLL_quant - mean NLL_ref) on the text's actual next tokens.

Positions are grouped by the section the predicted token belongs to: the pivot instruction and
the pivot answer (the pivot language) and the target answer (the target language). The prompt,
the template's tokens and the section headers are not scored. A 4-bit file typically drifts more
on the target language than on the pivot (on the demo's Gemma-3-270M zh model, Q4_K_M's mean KL
was about 1.8x higher on the Chinese answer than on the English text; see benchmarks/RESULTS.md).

The held-out text (:func:`held_out_rows`) is what the run did not train on: the last rows of its
data file after the first ``max_train_samples`` it trained on, or a rows file the user gives
(the training-row JSONL). A run whose data file is unknown falls back on the shipped sample for
its format and language; ``source`` says which, and says so when the rows were trained on.

Alongside the logits, :func:`tensor_summary` reads a file's tensor types: bits per weight, and how
many tensors **fell back** to another type: K and IQ types pack 256 weights per block, so a
tensor whose rows are not a multiple of 256 wide gets a 32-weight type instead (90 of
Gemma-3-270M's 236 tensors, whose rows are 640 wide, at Q4_K_M).

:func:`check` applies a threshold to the target-language mean KL (a warning, or a
:class:`~plug_lite.io.UserError` when strict); :func:`recommend` names the smallest file within it.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import data, formats, gguf_meta
from .engine import LlamaEngine
from .io import UserError, read_records
from .runs import DriftReport, DriftStats, FileDrift, RunRecord

__all__ = ["SECTIONS", "DEFAULT_ROWS", "Sample", "DriftText", "held_out_rows", "prepare", "compare", "compare_many",
           "summarize", "tensor_summary", "report", "table", "markdown", "check", "recommend"]

#: The scored sections of a PLUG answer (formats' names; ``target`` is the target-language answer).
SECTIONS = ("pivot_instruction", "pivot_response", "target")
#: Held-out conversations scored by default.
DEFAULT_ROWS = data.HELD_OUT_ROWS
_KIND_256 = ("_K", "IQ")  # type names whose blocks hold 256 weights (IQ4_NL excepted)


@dataclass
class Sample:
    """One tokenized conversation: its tokens and, per token, the section it belongs to."""

    id: str
    tokens: list[int]
    labels: list[str | None]


@dataclass
class DriftText:
    """The held-out conversations a drift report is computed on."""

    samples: list[Sample]
    source: str
    pivot: str | None
    target: str
    skipped: list[str] = field(default_factory=list)  # row ids whose sections could not be located

    def tokens(self, section: str | None = None) -> int:
        """Scored positions (of one section, or all)."""
        return sum(1 for s in self.samples for lab in s.labels[1:] if lab and (section is None or lab == section))


# --------------------------------------------------------------------------------------------
# The held-out text


def held_out_rows(rec: RunRecord, *, rows: int = DEFAULT_ROWS,
                  file: str | os.PathLike | None = None) -> tuple[list[dict], str]:
    """(training-format rows to score, where they come from) for a run: ``file`` when given, else
    the last ``rows`` of the rows its data file holds beyond those it trained on, else the last
    rows of the shipped sample."""
    if file is not None:
        found = read_records(file, required=("prompt", "completion"))
        return found[-rows:], f"{file} (last {min(rows, len(found))} rows)"
    split = data.run_rows(rec)
    if split is not None and split.held_out:
        first = len(split.trained) + max(0, len(split.held_out) - rows)
        last = len(split.trained) + len(split.held_out) - 1
        return split.held_out[-rows:], f"{split.source} rows {first}-{last} (not trained on)"
    spec = rec.spec
    sample, _ = data.sample_rows(spec)
    note = ("the run trained on every row of its data" if split is not None
            else "the run's data file is not recorded or not found")
    trained_on = split is not None and split.source.startswith("the shipped sample")
    return sample[-rows:], (f"the shipped sample ({spec.format}, {spec.target}), last {min(rows, len(sample))} rows; "
                            f"{note}{' (these rows were trained on)' if trained_on else ''}")


def _spans(completion: str, fmt: str, target: str, pivot: str | None) -> list[tuple[str, int, int]]:
    """(section, start, end) character spans of a completion's sections."""
    parsed = formats.parse(completion, target=target, pivot=pivot or "en", fmt=fmt)
    out, cursor = [], 0
    for sec in SECTIONS:
        text = getattr(parsed, sec)
        if not text:
            continue
        at = completion.find(text, cursor)
        if at < 0:
            continue
        out.append((sec, at, at + len(text)))
        cursor = at + len(text)
    return out


def prepare(rows: list[dict], gguf: str | os.PathLike, *, fmt: str, target: str, pivot: str | None,
            source: str) -> DriftText:
    """Render each row's whole conversation with the GGUF's own chat template, tokenize it (special
    tokens parsed) and label every token with the answer section it belongs to."""
    eng = LlamaEngine(gguf, vocab_only=True, ctx=512)
    samples, skipped = [], []
    try:
        for i, row in enumerate(rows):
            rid = str(row.get("id", i))
            completion = row["completion"][-1]["content"]
            text, _ = eng.format(list(row["prompt"]) + list(row["completion"]), generation_prompt=False)
            start = text.find(completion)
            spans = _spans(completion, fmt, target, pivot) if start >= 0 else []
            ids = eng.tokenize_text(text)
            pieces = eng.pieces(ids)
            raw, want = b"".join(pieces), text.encode("utf-8")
            if not spans or not raw.endswith(want):
                skipped.append(rid)
                continue
            shift = len(raw) - len(want)  # a BOS the tokenizer added in front of the text
            bounds = [(sec, len(text[: start + a].encode("utf-8")), len(text[: start + z].encode("utf-8")))
                      for sec, a, z in spans]
            # a token belongs to the section it overlaps (" How" starts with the space before it)
            labels, pos = [], -shift
            for piece in pieces:
                end = pos + len(piece)
                labels.append(next((sec for sec, a, z in bounds if pos < z and end > a and end > pos), None))
                pos = end
            samples.append(Sample(rid, ids, labels))
    finally:
        eng.close()
    if not samples:
        raise UserError(f"{source}: no row whose {fmt} answer sections could be located in the rendered conversation")
    return DriftText(samples, source, pivot, target, skipped)


# --------------------------------------------------------------------------------------------
# Logits


def _log_softmax(x):
    import numpy as np

    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def _positions(sample: Sample) -> tuple[list[int], list[int], list[str]]:
    """(positions whose next token is scored, those next tokens, their sections)."""
    pos = [i for i in range(len(sample.tokens) - 1) if sample.labels[i + 1]]
    return pos, [sample.tokens[i + 1] for i in pos], [sample.labels[i + 1] for i in pos]


def _score(ref_logits, q_logits, nxt: list[int], chunk: int = 32) -> dict[str, list]:
    """Per scored position (a row of both logit arrays): KL(ref || quant), top-1 agreement, and
    the NLL of the next token ``nxt`` under each. float32 log-softmax (its error, about 1e-6 per
    token, is far below the differences measured), sums in float64."""
    import numpy as np

    out: dict[str, list] = {"kl": [], "top1": [], "nll_ref": [], "nll_q": []}
    for a in range(0, len(nxt), chunk):
        tok = np.asarray(nxt[a:a + chunk])
        lr = _log_softmax(ref_logits[a:a + chunk])
        lq = _log_softmax(q_logits[a:a + chunk])
        out["kl"] += (np.exp(lr) * (lr - lq)).sum(axis=-1, dtype=np.float64).tolist()
        out["top1"] += (lr.argmax(axis=-1) == lq.argmax(axis=-1)).tolist()
        rows = np.arange(len(tok))
        out["nll_ref"] += (-lr[rows, tok]).astype(np.float64).tolist()
        out["nll_q"] += (-lq[rows, tok]).astype(np.float64).tolist()
    return out


def _stats(values: dict[str, list]) -> dict:
    import numpy as np

    n = len(values["kl"])
    if not n:
        return {"tokens": 0}
    kl = np.asarray(values["kl"])
    return {"tokens": n, "kl_mean": float(kl.mean()), "kl_p99": float(np.percentile(kl, 99)),
            "top1": float(np.mean(values["top1"])),
            "ppl_ratio": float(math.exp(np.mean(values["nll_q"]) - np.mean(values["nll_ref"])))}


def summarize(per_position: dict[str, list], sections: list[str], *, pivot: str | None, target: str) -> dict:
    """Group per-position values (:func:`_score`'s, with one section per position) by section,
    by language (pivot sections / the target answer) and in all."""
    def pick(keep) -> dict[str, list]:
        return {k: [v for v, s in zip(vals, sections) if keep(s)] for k, vals in per_position.items()}

    out: dict = {"sections": {s: _stats(pick(lambda x, s=s: x == s)) for s in SECTIONS if s in sections}}
    langs = {}
    if pivot and pivot != target and any(s != "target" for s in sections):
        langs[pivot] = _stats(pick(lambda x: x != "target"))
    if "target" in sections:
        langs[target] = _stats(pick(lambda x: x == "target"))
    out["languages"] = langs
    out["all"] = _stats(pick(lambda x: True))
    return out


def _n_ctx(text: DriftText) -> int:
    longest = max(len(s.tokens) for s in text.samples)
    return (longest + 63) // 64 * 64


#: Tokens per llama.cpp batch when scoring: each loaded file's context keeps room for this many
#: rows of logits (64 x 262,144 floats = 64 MiB for Gemma's vocabulary; 512 would be 512 MiB).
_BATCH = 64


def _groups(files: dict[str, str | os.PathLike], budget: int, per_file: int) -> list[list[str]]:
    """The files in groups whose sizes (plus ``per_file`` bytes each) add up to at most
    ``budget`` bytes (at least one file per group)."""
    groups: list[list[str]] = []
    size = 0
    for name, path in files.items():
        b = Path(path).stat().st_size + per_file
        if not groups or size + b > budget:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += b
    return groups


def compare_many(ref: str | os.PathLike, files: dict[str, str | os.PathLike], text: DriftText, *,
                 threads: int | None = None, max_loaded_bytes: int = 3 << 30) -> dict[str, dict]:
    """The drift of each file of ``files`` (name -> path) from ``ref`` on ``text``: per file
    :func:`summarize`'s groups plus ``seconds`` (its own evaluation and scoring). The files are
    loaded together, as many as fit in ``max_loaded_bytes`` (their sizes and their contexts'
    logits buffers), so that the reference evaluates each conversation once per group; logits
    are computed only where a token is scored."""
    n_ctx = _n_ctx(text)
    values = {n: {"kl": [], "top1": [], "nll_ref": [], "nll_q": []} for n in files}
    sections: dict[str, list[str]] = {n: [] for n in files}
    seconds = dict.fromkeys(files, 0.0)
    ref_eng = LlamaEngine(ref, ctx=n_ctx, threads=threads, batch=_BATCH)
    per_file = _BATCH * ref_eng.llm.n_vocab() * 4 * 2  # logits rows and the compute buffer, roughly
    try:
        for group in _groups(files, max_loaded_bytes, per_file):
            engines: dict[str, LlamaEngine] = {}
            try:
                for name in group:
                    t0 = time.time()
                    engines[name] = LlamaEngine(files[name], ctx=n_ctx, threads=threads, batch=_BATCH)
                    seconds[name] += time.time() - t0
                for k, sample in enumerate(text.samples):
                    pos, nxt, secs = _positions(sample)
                    if not pos:
                        continue
                    ref_logits = ref_eng.logits(sample.tokens, pos)
                    for name, eng in engines.items():
                        t0 = time.time()
                        scored = _score(ref_logits, eng.logits(sample.tokens, pos), nxt)
                        for key in scored:
                            values[name][key] += scored[key]
                        sections[name] += secs
                        seconds[name] += time.time() - t0
                    if len(text.samples) > 4 and (k + 1) % max(1, len(text.samples) // 4) == 0:
                        print(f"drift: {', '.join(group)}: {k + 1}/{len(text.samples)} conversations", file=sys.stderr, flush=True)
            finally:
                for eng in engines.values():
                    eng.close()
    finally:
        ref_eng.close()
    out: dict[str, dict] = {}
    for name in files:
        res = summarize(values[name], sections[name], pivot=text.pivot, target=text.target)
        res["seconds"] = round(seconds[name], 1)
        out[name] = res
        kl = (res["languages"].get(text.target) or res["all"]).get("kl_mean")
        print(f"drift: {name}: target-language ({text.target}) mean KL {kl:.4f}", file=sys.stderr, flush=True)
    return out


def compare(ref: str | os.PathLike, quant: str | os.PathLike, text: DriftText, *, threads: int | None = None) -> dict:
    """The drift of one file (see :func:`compare_many`)."""
    return compare_many(ref, {"file": quant}, text, threads=threads)["file"]


# --------------------------------------------------------------------------------------------
# Tensor types


def tensor_summary(path: str | os.PathLike, qtype: str | None = None) -> dict:
    """Bits per weight, tensor types, and the tensors that fell back from ``qtype``'s 256-weight
    blocks to another type because their rows are not a multiple of 256 wide."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    n_bytes = n_weights = 0
    types: Counter = Counter()
    fell: Counter = Counter()
    wide = bool(qtype) and any(k in qtype.upper() for k in _KIND_256) and qtype.upper() != "IQ4_NL"
    matrices = 0
    for _, dims, ggml_type in gguf_meta.read_tensors(path):
        count = math.prod(dims)
        kind = GGMLQuantizationType(ggml_type)
        block, size = GGML_QUANT_SIZES[kind]
        n_bytes += count // block * size
        n_weights += count
        types[kind.name] += 1
        if len(dims) >= 2 and kind.name not in ("F32", "F16", "BF16"):
            matrices += 1
            if wide and block != 256 and dims[0] % 256:
                fell[kind.name] += 1
    return {"bits_per_weight": round(8 * n_bytes / max(1, n_weights), 3), "types": dict(types),
            "quantized_tensors": matrices, "fallbacks": sum(fell.values()), "fallback_types": dict(fell)}


# --------------------------------------------------------------------------------------------
# Reading the results


def _target_kl(result: dict, target: str) -> float | None:
    group = (result.get("languages") or {}).get(target) or result.get("all") or {}
    return group.get("kl_mean")


def report(ref_name: str, ref: str | os.PathLike, files: dict[str, str | os.PathLike], text: DriftText, *,
           max_drift: float, strict: bool = False, threads: int | None = None) -> DriftReport:
    """The typed drift report of ``files`` against the reference ``ref`` (named ``ref_name``):
    :func:`compare_many`, :func:`tensor_summary`, the warnings of :func:`check` (never raised
    here: ``strict`` is recorded) and the file :func:`recommend` names, the reference counting as a
    file with no drift."""
    results = compare_many(ref, files, text, threads=threads)
    sizes = {name: Path(p).stat().st_size for name, p in {ref_name: ref, **files}.items()}
    drifted = {}
    for name, res in results.items():
        t = tensor_summary(files[name], name)
        drifted[name] = FileDrift(
            languages={k: DriftStats(**v) for k, v in res["languages"].items()},
            sections={k: DriftStats(**v) for k, v in res["sections"].items()},
            all=DriftStats(**res["all"]), bytes=sizes[name], bits_per_weight=t["bits_per_weight"],
            fallbacks=t["fallbacks"], quantized_tensors=t["quantized_tensors"], seconds=res["seconds"])
    exact = {"languages": {text.target: {"kl_mean": 0.0}}}
    return DriftReport(
        reference=ref_name, reference_bytes=sizes[ref_name], text=text.source, rows=len(text.samples),
        tokens={s: text.tokens(s) for s in SECTIONS}, target=text.target, pivot=text.pivot, max_drift=max_drift,
        strict=strict, files=drifted, warnings=check(results, target=text.target, max_drift=max_drift),
        recommended=recommend({ref_name: exact, **results}, sizes, target=text.target, max_drift=max_drift))


def _rows(rep: DriftReport) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the drift table: the reference, then one row per file."""
    langs = [lang for lang in (rep.pivot, rep.target)
             if lang and any(lang in f.languages for f in rep.files.values())]
    head = ["file", "MiB", "bits/weight"]
    head += [f"{lang} ({'target' if lang == rep.target else 'pivot'}): KL mean / p99, top-1" for lang in langs]
    head += [f"{rep.target} ppl ratio", "fell back", f"within {rep.max_drift:g}"]

    def mib(n: int | None) -> str:
        return f"{n / 2**20:.1f}" if n else "-"

    rows = [[rep.reference, mib(rep.reference_bytes), "16" if rep.reference in ("F16", "BF16") else "-",
             *(["reference"] * len(langs)), "1", "-", "yes"]]
    for name, f in rep.files.items():
        cells = [name, mib(f.bytes), f"{f.bits_per_weight:.2f}" if f.bits_per_weight else "-"]
        for lang in langs:
            st = f.languages.get(lang)
            cells.append(f"{st.kl_mean:.3f} / {st.kl_p99:.2f}, {100 * st.top1:.1f}%" if st and st.tokens else "-")
        st = f.languages.get(rep.target) or f.all
        kl = f.kl(rep.target)
        cells += [f"{st.ppl_ratio:.3f}" if st.ppl_ratio else "-",
                  f"{f.fallbacks}/{f.quantized_tensors}" if f.quantized_tensors else "-",
                  "-" if kl is None else ("yes" if kl <= rep.max_drift else "no")]
        rows.append(cells)
    for r in rows:
        if r[0] == rep.recommended:
            r[0] += " (recommended)"
    return head, rows


def _caption(rep: DriftReport) -> str:
    scored = ", ".join(f"{k} {v}" for k, v in rep.tokens.items() if v)
    return (f"drift against {rep.reference} on {rep.text}: {rep.rows} rows, scored tokens {scored}; "
            f"a file is within --max-drift {rep.max_drift:g} when its {rep.target} mean KL is")


def table(rep: DriftReport) -> str:
    """The drift table as text (export prints it)."""
    head, rows = _rows(rep)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = [_caption(rep), "  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def markdown(rep: DriftReport) -> list[str]:
    """The drift table as Markdown lines (the model card, the demo's report)."""
    head, rows = _rows(rep)
    out = [f"| {' | '.join(head)} |", "|" + "---|" * len(head)]
    out += [f"| {' | '.join(r)} |" for r in rows]
    return [_caption(rep).replace("--max-drift", "`--max-drift`") + ":", "", *out]


def check(results: dict[str, dict], *, target: str, max_drift: float, strict: bool = False) -> list[str]:
    """Warnings for the files whose target-language mean KL exceeds ``max_drift``; with
    ``strict``, a :class:`UserError` naming them instead."""
    over = [(name, kl) for name, res in results.items() if (kl := _target_kl(res, target)) is not None and kl > max_drift]
    msgs = [f"{name}: target-language ({target}) mean KL {kl:.3f} exceeds --max-drift {max_drift:g}" for name, kl in over]
    if strict and over:
        raise UserError("; ".join(msgs) + " (--strict-drift)")
    return msgs


def recommend(results: dict[str, dict], sizes: dict[str, int], *, target: str, max_drift: float) -> str | None:
    """The smallest file whose target-language mean KL is within ``max_drift`` (None if none is)."""
    ok = [name for name, res in results.items()
          if name in sizes and (kl := _target_kl(res, target)) is not None and kl <= max_drift]
    return min(ok, key=lambda n: sizes[n]) if ok else None
