"""``plug-lite translate``: the paper's data step. Translate an English (pivot) instruction
dataset into a target language with an LLM, through the same client, cache and resume machinery
as the judge (:mod:`plug_lite.llm`).

Each record's instruction and response go out together in ONE call, between delimiter lines the
model is asked to keep (``<<<INSTRUCTION>>>``, ``<<<RESPONSE>>>``, ``<<<END>>>``); the reply is
split on them strictly (each exactly once, in order, both parts non-empty). Records that fail to
split, or whose call fails, are listed in a rejects file with the reason, never silently dropped.
Exit status: 0, or 1 when no call succeeded, 3 when some calls failed (a rerun retries them).

The output JSONL ``{id, instruction, response}`` has the English file's ids, so
``plug_lite.data`` joins the two files into PLUG training rows (two-file mode). An Alpaca-style
``input`` field is appended to the instruction after a blank line.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from . import llm, llm_batch
from .cli import run
from .io import UserError, read_records, redact, refuse_overwrite, write_jsonl
from .languages import get as get_language

__all__ = ["main", "cli", "build_messages", "split_reply", "MARKERS"]

MARKERS = ("<<<INSTRUCTION>>>", "<<<RESPONSE>>>", "<<<END>>>")

SYSTEM = (
    "You are a professional translator. You translate instruction-following data for training "
    "AI assistants. Translate faithfully and naturally, as a native speaker of the target "
    "language would write: keep the meaning, tone, formatting (lists, line breaks, Markdown) and "
    "any code, formulas, numbers, URLs and proper names that should stay as they are. Do not "
    "answer, shorten, explain or comment on the texts; only translate them."
)
TEMPLATE = (
    "Translate the instruction and the response below from {source} into {target}.\n"
    "Write your reply in exactly this layout, keeping the three marker lines unchanged and "
    "adding nothing before or after:\n"
    "<<<INSTRUCTION>>>\n(the {target} instruction)\n<<<RESPONSE>>>\n(the {target} response)\n<<<END>>>\n\n"
    "<<<INSTRUCTION>>>\n{instruction}\n<<<RESPONSE>>>\n{response}\n<<<END>>>"
)


def _defuse(text: str) -> str:
    """Source text must not contain the markers themselves."""
    return re.sub(r"<<<\s*(INSTRUCTION|RESPONSE|END)\s*>>>", r"<< \1 >>", text, flags=re.IGNORECASE)


def build_messages(instruction: str, response: str, target: str, source: str = "en") -> list[dict]:
    t, s = get_language(target), get_language(source)
    user = TEMPLATE.replace("{source}", s.name).replace("{target}", t.name)
    user = user.replace("{instruction}", _defuse(instruction)).replace("{response}", _defuse(response))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def prompt_hash() -> str:
    return hashlib.sha256((SYSTEM + TEMPLATE).encode("utf-8")).hexdigest()[:16]


def split_reply(text: str) -> tuple[tuple[str, str] | None, str | None]:
    """((instruction, response), None) or (None, reason)."""
    found = {}
    for m in MARKERS:
        pat = re.escape(m).replace("<<<", r"<<<\s*").replace(">>>", r"\s*>>>")
        hits = [x.start() for x in re.finditer(pat, text or "", flags=re.IGNORECASE)]
        if len(hits) != 1:
            what = "missing" if not hits else f"appears {len(hits)} times"
            hint = " (reply cut off?)" if m == MARKERS[2] and not hits else ""
            return None, f"marker {m} {what}{hint}"
        found[m] = re.search(pat, text, flags=re.IGNORECASE)
    i, r, e = (found[m] for m in MARKERS)
    if not (i.start() < r.start() < e.start()):
        return None, "markers out of order"
    if text[:i.start()].strip() or text[e.end():].strip():
        extra = (text[:i.start()] + text[e.end():]).strip()
        if len(extra) > 40:  # a short "Here you go:" is tolerated, a second answer is not
            return None, "text outside the markers"
    ins, resp = text[i.end():r.start()].strip(), text[r.end():e.start()].strip()
    if not ins:
        return None, "empty instruction"
    if not resp:
        return None, "empty response"
    return (ins, resp), None


def main(
    input: str,
    *,
    out: str,
    target: str,
    source: str = "en",
    rejects: str | None = None,
    translator: llm.LLMSettings = llm.LLMSettings(max_tokens=2048),
    cache: str | None = None,
    parallel: int = 4,
    limit: int | None = None,
    dry_run: bool = False,
    price_in: float | None = None,
    price_out: float | None = None,
    prices: str | None = None,
    batch_opts: llm_batch.BatchOptions = llm_batch.BatchOptions(),
) -> dict:
    """Translate ``input`` into ``target``; write ``out`` (JSONL) and the rejects file.
    Returns counts (or the plan when ``dry_run``, or what to do next when the calls went to a
    request file or to batches still running).

    Args:
        input: English dataset (JSON/JSONL/CSV with id?, instruction, response|output)
        out: output JSONL {id, instruction, response}
        target: target language code (zh, ko, it, es, ...)
        source: the dataset's language
        rejects: rejects JSONL (default OUT.rejects.jsonl)
        translator: the translator's endpoint (its fields are the flags below)
        translator.model: translator model (env PLUG_LITE_JUDGE_MODEL; default gpt-4o-mini)
        translator.base_url: OpenAI-compatible base URL (env PLUG_LITE_JUDGE_BASE_URL / OPENAI_BASE_URL)
        translator.api_key: API key (prefer env OPENAI_API_KEY); never printed
        translator.timeout: seconds per request
        translator.max_retries: client retries on 408/409/429/5xx/timeouts (exponential backoff)
        translator.max_tokens: tokens per reply
        cache: call cache (default OUT.cache.jsonl)
        parallel: calls in flight
        limit: translate the first N records only
        dry_run: print calls, tokens and cost; spend nothing
        price_in: USD per 1M input tokens
        price_out: USD per 1M output tokens
        prices: JSON file {"model": [usd_in, usd_out]} per 1M tokens
        batch_opts: how the calls are made: live (default), or through a batch engine (the flags
            --write-requests, --read-results, --batch, --batch-wait; :mod:`plug_lite.llm_batch`)
    """
    get_language(target)
    mode = batch_opts.check().mode
    cfg = translator.resolved(need_key=not dry_run and mode in ("live", "batch"))
    recs = read_records(input, required=("instruction",))
    seen: dict[str, str] = {}
    items = []
    for n, r in enumerate(recs):
        rid = str(r.get("id", n))
        if rid in seen:
            raise UserError(f"{r['_where']}: duplicate id {rid!r} (first at {seen[rid]})")
        seen[rid] = r["_where"]
        resp = r.get("response", r.get("output"))
        if resp is None:
            raise UserError(f"{r['_where']}: missing field 'response'")
        ins = str(r["instruction"])
        if str(r.get("input") or "").strip():
            ins = f"{ins}\n\n{r['input']}"
        items.append((rid, ins, str(resp)))
    if limit:
        items = items[:limit]
    out_p = Path(out)
    rej_p = Path(rejects) if rejects else out_p.with_name(out_p.stem + ".rejects.jsonl")
    cache_p = Path(cache) if cache else out_p.with_name(out_p.stem + ".cache.jsonl")
    refuse_overwrite({"--out": out_p, "--rejects": rej_p, "--cache": cache_p, **batch_opts.outputs()},
                     {"INPUT": input, "--prices": prices, **batch_opts.inputs()})
    cc = llm.CallCache(cache_p)
    keys, jobs, calls = [], {}, []
    for rid, ins, resp in items:
        msgs = build_messages(ins, resp, target, source)
        k = llm.cache_key(task="translate", model=cfg.model, prompt=prompt_hash(), target=target, source=source,
                          instruction=ins, response=resp, temperature=cfg.temperature, max_tokens=cfg.max_tokens)
        keys.append(k)
        if k not in cc and k not in jobs:
            jobs[k] = msgs
            calls.append(llm_batch.Call(k, cfg.body(msgs), {"job": "translate", "id": rid, "target": target}))
    cached = sum(1 for k in keys if k in cc)
    if dry_run:
        tok_in = sum(llm.estimate_tokens(m[1]["content"]) + 150 for m in jobs.values())
        tok_out = sum(llm.estimate_tokens(ins + resp) * 2 for (rid, ins, resp), k in zip(items, keys) if k in jobs)
        price = llm_batch.price(llm.price_for(cfg.model, price_in=price_in, price_out=price_out, prices_file=prices),
                                batch_opts)
        cc.close()
        return {"dry_run": {"calls": len(jobs), "cached": cached, "est_input_tokens": tok_in,
                            "est_output_tokens": tok_out, "judge_model": cfg.model, "batch": batch_opts.batch,
                            "est_cost_usd": (tok_in * price[0] + tok_out * price[1]) / 1e6 if price else None}}
    errors: dict[str, str] = {}
    made = []  # list.append is atomic across threads
    try:
        sent = llm_batch.dispatch(calls, cc, batch_opts, cfg=cfg, ledger=llm_batch.ledger_path(cache_p),
                                  job="translate")
    except BaseException:
        cc.close()
        raise
    if sent is not None and not sent.finished:
        cc.close()
        return {"unfinished": sent.message(), "batch": sent.public()}
    if sent is not None:
        jobs = {}  # nothing more is sent live
        errors.update(sent.failed)
    client = llm.Client(cfg) if jobs else None

    def call(job):
        k, msgs = job
        try:
            text, usage = client.chat(msgs)
        except llm.CallError as e:
            errors[k] = str(e)
            return
        cc.put(k, {"text": text, "usage": usage, "model": cfg.model})
        made.append(k)

    try:
        llm.run_jobs(list(jobs.items()), call, parallel=parallel, desc=f"translate to {target}")
    finally:
        cc.close()
    good, bad = [], []
    for (rid, ins, resp), k in zip(items, keys):
        rec = cc.get(k)
        if rec is None:
            bad.append({"id": rid, "reason": f"call failed: {errors.get(k, 'not run')}", "reply_tail": ""})
            continue
        parts, reason = split_reply(rec.get("text") or "")
        if parts is None:
            bad.append({"id": rid, "reason": reason, "reply_tail": (rec.get("text") or "")[-300:]})
            continue
        good.append({"id": rid, "instruction": parts[0], "response": parts[1]})
    write_jsonl(out_p, good)
    write_jsonl(rej_p, bad)
    by_batch = sent.by_batch if sent is not None else 0
    return {"translated": len(good), "rejected": len(bad), "calls_made": len(made), "calls_by_batch": by_batch,
            "cached": cached, "calls_failed": len(errors), "first_error": next(iter(errors.values()), None),
            "out": str(out_p), "rejects": str(rej_p), **({"batch": sent.public()} if sent is not None else {})}


def _finish(res: dict, args: dict) -> int:
    """What ``plug-lite translate`` prints, and its exit status."""
    if "dry_run" in res:
        d = res["dry_run"]
        cost = f"${d['est_cost_usd']:.4f}" if d["est_cost_usd"] is not None else "unknown (pass --price-in/--price-out)"
        print(f"dry run: {d['calls']} calls to make ({d['cached']} cached), about {d['est_input_tokens']} input + "
              f"{d['est_output_tokens']} output tokens, estimated cost {cost}"
              + (" at the Batch API's price" if d["batch"] else ""))
        return 0
    if "unfinished" in res:
        print(res["unfinished"], file=sys.stderr)
        return 0
    rc, line = llm.run_outcome(made=res["calls_made"] + res["calls_by_batch"], failed=res["calls_failed"],
                               what="translate calls", first_error=res["first_error"])
    if rc == llm.EXIT_ALL_FAILED:
        print(f"error: {redact(line)}", file=sys.stderr)
        return rc
    print(json.dumps(res, ensure_ascii=False))
    print(llm.calls_summary(made=res["calls_made"], cached=res["cached"], by_batch=res["calls_by_batch"],
                            failed=res["calls_failed"]), file=sys.stderr)
    if res["rejected"]:
        print(f"{res['rejected']} records rejected: see {res['rejects']}", file=sys.stderr)
    if line:
        print(f"warning: {redact(line)}", file=sys.stderr)
    return rc


def cli(argv: list[str] | None = None) -> int:
    return run(main, argv, prog="plug-lite translate", finish=_finish, positional=("input",),
               exclude=("translator.temperature",))


if __name__ == "__main__":
    raise SystemExit(cli())
