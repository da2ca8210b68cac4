"""``plug-lite generate``: answer every instruction of an evaluation set, resumably.

One JSONL record per instruction, appended and fsynced as soon as it is answered, so a killed
run loses at most the answer in flight and a rerun skips the ids already written. Each record
has exactly these fields (judge, report and metrics read them)::

    id, instruction, category, dataset, output (raw text), answer (PlugParse.answer), status,
    target_response (extracted target section or null), pivot_instruction, pivot_response,
    format, target (the target language), pivot, tokens {prompt, completion, pivot, target},
    seconds, finish_reason, generator, decoding {...}

(Files written before these names held the language in ``lang`` and the target section in
``target``; every reader takes both, see :func:`plug_lite.formats.upgrade_answer`.)

The target language, format, pivot and think variant default to what the model records: a
GGUF's ``plug.*`` keys, or a training run folder's ``plug_run.json``.

Backends: ``llama.cpp`` (a .gguf; the same engine as ``plug-lite chat``), ``transformers`` (an
HF model folder, or a folder holding a PEFT adapter applied over its base) and ``openai`` (any
OpenAI-compatible endpoint via the official client: ``--base-url``, key from ``--api-key`` or
``OPENAI_API_KEY``). Greedy decoding by default (temperature 0), as in the paper.

Through an endpoint the answers can also go by a batch engine (``--write-requests``,
``--read-results``, ``--batch``: :mod:`plug_lite.llm_batch`): the same request bodies, keyed in a
call cache ``OUT.calls.jsonl``; the records are then written from the cached answers (``seconds``
is then the time to write a record, not to make the answer). A live run through the same
endpoint takes the answers already in that cache before it asks the endpoint, so switching from
``--batch`` to live buys none twice. ``--translate-test`` needs three calls in a row per answer
and always runs live.

``tokens.pivot`` is the number of generated tokens before the target section began (what the
pivot costs); the endpoint backend sees no tokens, so there it and ``tokens.target`` are null.

``--prompted`` is the prompted-PLUG baseline (format ``plug_prompted``; :mod:`plug_lite.prompted`):
an instruct model never trained on PLUG is asked for the PLUG format by an instruction and
``--shots`` worked examples (the shipped sample's, or ``--examples FILE``; never the evaluation
set), and its output is parsed as a PLUG model's.

``--translate-test`` is the translate-test baseline (format ``translate_test``): the instruction
is translated into the pivot language by an LLM endpoint (the ``translate`` machinery: same
client, on-disk call cache ``OUT.translate-cache.jsonl``) or by the model itself, the model
answers in the pivot, and the answer is translated back; ``pivot_instruction``,
``pivot_response`` and ``answer`` hold the three texts. An answer whose call fails is not
written (a rerun retries it); the exit status is 0, 1 (no answer succeeded) or 3 (some failed).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterable

from . import formats, gguf_meta, languages, llm, llm_batch, runs
from .cli import parse, parser_for
from .engine import EngineOptions, LlamaEngine
from .formats import AnswerRecord, upgrade_answer
from .io import (JsonlAppender, UserError, file_identity, read_jsonl_resumable, read_records, redact, refuse_changed,
                 refuse_overwrite, run_cli)
from .prompted import PROMPTED, PromptedPlug
from .spec import FORMATS, PlugSpec

__all__ = ["load_instructions", "LlamaCppBackend", "TransformersBackend", "OpenAIBackend", "backend_kind",
           "make_backend", "generate", "summarize", "main", "cli", "SelfTranslator", "translate_test_record"]

#: The fields of one line: the instruction's, the answer's (:class:`plug_lite.formats.AnswerRecord`),
#: then how it was made.
FIELDS = ("id", "instruction", "category", "dataset", *AnswerRecord.FIELDS, "tokens", "seconds",
          "finish_reason", "generator", "decoding")


def load_instructions(name_or_path: str, lang: str, limit: int | None = None) -> list[dict]:
    """Records with ``id`` and ``instruction`` (``category``/``dataset`` optional), from
    :func:`plug_lite.evalsets.load_eval_set` when that module exists, else a JSON/JSONL/CSV file."""
    try:
        from .evalsets import load_eval_set
    except ImportError:
        load_eval_set = None
    if load_eval_set is not None:
        recs = list(load_eval_set(name_or_path, lang, limit=limit))
    else:
        recs = read_records(name_or_path, required=("id", "instruction"), nonempty=("instruction",))
        recs = recs[:limit] if limit else recs
    seen: dict[str, str] = {}
    for i, r in enumerate(recs):
        where = r.get("_where", f"{name_or_path}: record {i}")
        if "id" not in r or "instruction" not in r:
            raise UserError(f"{where}: missing field {'id' if 'id' not in r else 'instruction'!r}")
        key = str(r["id"])
        if key in seen:
            raise UserError(f"{where}: duplicate id {key!r} (first at {seen[key]})")
        seen[key] = where
    return recs


# --------------------------------------------------------------------------------------------
# Backends. Each ``generate(messages)`` returns a dict: output, finish_reason, prompt_tokens,
# completion_tokens, and ``pieces`` (text per generated token, in order) when it has them.


class LlamaCppBackend:
    name = "llama.cpp"

    def __init__(self, model: str, options: EngineOptions | None = None) -> None:
        self.engine = LlamaEngine(model, options)
        self.default_name = Path(model).stem
        #: what the answers depend on, recorded in each line and compared on resume
        self.fingerprint = {"model": file_identity(model)}
        if options is not None and options.lora:
            self.fingerprint["lora"] = file_identity(options.lora)

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, seed: int) -> dict:
        eng = self.engine
        toks, stop = eng.tokenize(messages)
        room = eng.n_ctx - len(toks)
        if room < 16:
            raise UserError(f"the prompt is {len(toks)} tokens and the context holds {eng.n_ctx}: raise --ctx")
        pieces: list[str] = []  # the text each generated token added (held text joins a later one)
        for delta, n in eng.stream(toks, max_tokens=min(max_new_tokens, room), temperature=temperature,
                                   stop=stop, seed=seed if temperature > 0 else None):
            pieces.extend([""] * (max(n, 1) - len(pieces)))
            pieces[max(n, 1) - 1] += delta
        return {"output": "".join(pieces), "finish_reason": eng.finish_reason, "prompt_tokens": len(toks),
                "completion_tokens": eng.completion_tokens, "pieces": pieces}

    def close(self) -> None:
        self.engine.close()


def _find_adapter(folder: Path) -> Path | None:
    if (folder / "adapter_config.json").exists():
        return folder
    for sub in ("adapter", "final", "checkpoint-final"):
        if (folder / sub / "adapter_config.json").exists():
            return folder / sub
    found = sorted(folder.glob("*/adapter_config.json"))
    return found[-1].parent if found else None


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: str, *, base: str | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(model)
        if not folder.is_dir():
            raise UserError(f"{folder}: not a model folder")
        adapter = _find_adapter(folder) if not (folder / "config.json").exists() or base else None
        if adapter is None and not (folder / "config.json").exists():
            raise UserError(f"{folder}: neither a model folder (config.json) nor a run with an adapter (adapter_config.json)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
        if adapter is not None:
            from peft import PeftModel

            cfg = json.loads((adapter / "adapter_config.json").read_text())
            base = base or cfg.get("base_model_name_or_path")
            if not base:
                raise UserError(f"{adapter}/adapter_config.json: no base_model_name_or_path; pass --base")
            tok_src = adapter if (adapter / "tokenizer_config.json").exists() else base
            self.tok = AutoTokenizer.from_pretrained(str(tok_src))
            m = AutoModelForCausalLM.from_pretrained(str(base), torch_dtype=dtype)
            self.model = PeftModel.from_pretrained(m, str(adapter))
            weights = sorted(adapter.glob("*.safetensors")) + sorted(Path(base).glob("*.safetensors"))
        else:
            self.tok = AutoTokenizer.from_pretrained(str(folder))
            self.model = AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=dtype)
            weights = sorted(folder.glob("*.safetensors"))
        self.fingerprint = {"model": file_identity(*weights)}
        self.model.to(self.device).eval()
        self.default_name = folder.name
        if not self.tok.chat_template:
            raise UserError(f"{folder}: the tokenizer has no chat template")

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, seed: int) -> dict:
        import torch

        ids = self.tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False).to(self.device)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tok.eos_token_id}
        eos_ids.discard(None)
        kw = dict(do_sample=False) if temperature <= 0 else dict(do_sample=True, temperature=temperature)
        if temperature > 0:
            torch.manual_seed(seed)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else next(iter(eos_ids))
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                      eos_token_id=sorted(eos_ids), pad_token_id=pad, **kw)
        gen = out[0, ids.shape[1]:].tolist()
        finish = "length"
        if gen and gen[-1] in eos_ids:
            gen, finish = gen[:-1], "stop"
        pieces, prev = [], ""
        for i in range(len(gen)):
            text = self.tok.decode(gen[: i + 1], skip_special_tokens=True)
            if text.endswith("\ufffd") and i + 1 < len(gen):  # an incomplete character
                pieces.append("")
                continue
            pieces.append(text[len(prev):])
            prev = text
        return {"output": prev, "finish_reason": finish, "prompt_tokens": ids.shape[1],
                "completion_tokens": len(gen), "pieces": pieces}

    def close(self) -> None:
        pass


class OpenAIBackend:
    name = "openai"

    def __init__(self, endpoint: llm.LLMSettings) -> None:
        """The model at ``endpoint.base_url`` (``endpoint.model``, else the first it lists; key
        ``endpoint.api_key``, else ``OPENAI_API_KEY``)."""
        import openai

        self._openai = openai
        key = endpoint.api_key or os.environ.get("OPENAI_API_KEY") or "no-key"
        self._secret = key
        self.base_url = base_url = endpoint.base_url
        self.client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=endpoint.max_retries,
                                    timeout=endpoint.timeout)
        model_name = endpoint.model
        if not model_name:
            models = self._call(lambda: self.client.models.list())
            ids = [m.id for m in models.data]
            if not ids:
                raise UserError(f"{base_url}: the endpoint lists no models: pass --model-name")
            model_name = ids[0]
        self.model_name = model_name
        self.default_name = model_name
        self.fingerprint = {"model": model_name}

    def _call(self, fn):
        o = self._openai
        try:
            return fn()
        except (o.AuthenticationError, o.PermissionDeniedError) as e:
            raise UserError(f"{self.base_url}: HTTP {e.status_code}: the endpoint refused the API key "
                            "(set --api-key or OPENAI_API_KEY)") from None
        except o.NotFoundError as e:
            raise UserError(f"{self.base_url}: HTTP 404: not found (check --base-url and --model-name; "
                            f"{redact(str(e), [self._secret])[:120]})") from None
        except o.APIConnectionError as e:  # timeouts too; this answer fails, the run goes on
            raise llm.CallError(f"{self.base_url}: cannot connect ({llm.retries_done(e)})") from None
        except o.APIStatusError as e:  # 429 / 5xx after the client's retries, 400, ...
            msg = redact(str(e), [self._secret]).split("\n")[0][:160]
            raise llm.CallError(f"{self.base_url}: HTTP {e.status_code} ({llm.retries_done(e)}): {msg}") from None
        except ValueError:  # a 200 whose body is not JSON (the client's json.loads)
            raise llm.CallError(f"{self.base_url}: the reply is not JSON") from None

    def body(self, messages: list[dict], *, max_new_tokens: int, temperature: float, seed: int) -> dict:
        """The request body of one answer (:func:`plug_lite.llm.chat_body`), live or in a batch file."""
        return llm.chat_body(self.model_name, messages, temperature=temperature, max_tokens=max_new_tokens, seed=seed)

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, seed: int) -> dict:
        r = self._call(lambda: self.client.chat.completions.create(**self.body(
            messages, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)))
        text, finish_reason, usage = llm.completion_parts(r)
        return {"output": text, "finish_reason": finish_reason, "prompt_tokens": usage["prompt"],
                "completion_tokens": usage["completion"], "pieces": None}

    def close(self) -> None:
        self.client.close()


#: The endpoint ``generate`` answers with when it is given a base URL (a long timeout: an answer
#: of a thousand tokens from a local server on a CPU).
ENDPOINT = llm.LLMSettings(timeout=600.0)


def backend_kind(model: str | None, backend: str | None = None, endpoint: llm.LLMSettings = ENDPOINT) -> str:
    """The backend for ``model`` (or ``endpoint.base_url``): ``backend``, or what ``model`` is: a
    .gguf file (llama.cpp), a folder (transformers), none (the endpoint). A missing model path
    is an error here, before anything else is read."""
    if backend is None:
        if endpoint.base_url:
            backend = "openai"
        elif model is None:
            raise UserError("give a model (a .gguf file or an HF folder) or --base-url")
        elif Path(model).is_dir():
            backend = "transformers"
        else:
            backend = "llama.cpp"
    if backend == "openai":
        if not endpoint.base_url:
            raise UserError("--backend openai needs --base-url")
        return backend
    if backend not in ("llama.cpp", "transformers"):
        raise UserError(f"unknown backend {backend!r}; expected llama.cpp, transformers or openai")
    if model is None:
        raise UserError(f"--backend {backend} needs a model path")
    if not Path(model).exists():
        raise UserError(f"{model}: not found")
    return backend


def make_backend(model: str | None, *, backend: str | None = None, endpoint: llm.LLMSettings = ENDPOINT,
                 base: str | None = None, options: EngineOptions | None = None):
    """The backend for ``model`` (or ``endpoint.base_url``), of the kind :func:`backend_kind` picks."""
    backend = backend_kind(model, backend, endpoint)
    if backend == "openai":
        return OpenAIBackend(replace(endpoint, model=endpoint.model or model))
    if backend == "llama.cpp":
        return LlamaCppBackend(model, options)
    return TransformersBackend(model, base=base)


# --------------------------------------------------------------------------------------------
# One record.


def recorded_spec(model: str | None) -> dict:
    """What a model records of its PLUG spec (``format``, ``target``, ``pivot``, ``think``): a
    GGUF's ``plug.*`` keys, a training run folder's ``plug_run.json``; empty for anything else."""
    if not model:
        return {}
    path = Path(model)
    if path.is_file() and (path.suffix.lower() == ".gguf" or _starts_with(path, gguf_meta.MAGIC)):
        return PlugSpec.gguf_values(gguf_meta.read_metadata(gguf_meta.check(path)))
    if path.is_dir() and runs.is_finished(path):
        return {k: v for k, v in runs.RunRecord.load(path).spec.run_fields().items() if v not in (None, "")}
    return {}


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def split_tokens(pieces: list[str] | None, spec: PlugSpec, completion_tokens: int | None) -> tuple[int | None, int | None]:
    """(pivot tokens, target tokens): tokens generated before the target section began, and the
    rest; ``(None, None)`` without per-token text."""
    if pieces is None or completion_tokens is None:
        return None, None
    if spec.format == "mono":
        return 0, completion_tokens
    parser = formats.StreamParser(**spec.parser_args())
    for i, piece in enumerate(pieces):
        if any(ev.section == "target" for ev in parser.feed(piece)):
            return i, completion_tokens - i
    if any(ev.section == "target" for ev in parser.close()):
        return len(pieces), completion_tokens - len(pieces)
    return completion_tokens, 0


def answer_record(rec: dict, gen: dict, *, spec: PlugSpec, seconds: float, generator: str, decoding: dict) -> dict:
    """The line of an answers file for the instruction ``rec`` and the backend's answer ``gen``."""
    answer = AnswerRecord.parsed(gen["output"], spec, finished=gen["finish_reason"] != "length")
    piv, tgt = split_tokens(gen["pieces"], spec, gen["completion_tokens"])
    return _line(rec, answer, gen, pivot_tokens=piv, target_tokens=tgt, seconds=seconds, generator=generator,
                 decoding=decoding)


def _line(rec: dict, answer: AnswerRecord, gen: dict, *, pivot_tokens: int | None, target_tokens: int | None,
          seconds: float, generator: str, decoding: dict) -> dict:
    out = {
        "id": rec["id"],
        "instruction": rec["instruction"],
        "category": rec.get("category"),
        "dataset": rec.get("dataset"),
        **answer.to_dict(),
        "tokens": {"prompt": gen["prompt_tokens"], "completion": gen["completion_tokens"], "pivot": pivot_tokens,
                   "target": target_tokens},
        "seconds": round(seconds, 3),
        "finish_reason": gen["finish_reason"],
        "generator": generator,
        "decoding": decoding,
    }
    assert tuple(out) == FIELDS
    return out


# --------------------------------------------------------------------------------------------
# The translate-test baseline: the instruction is translated into the pivot language, the model
# answers it there, and its answer is translated back into the target language.

TRANSLATE_TEST = "translate_test"
#: After this many answers in a row fail (an endpoint down, a translator refusing), the run stops.
GIVE_UP_AFTER = 5


class SelfTranslator:
    """The model under test as its own translator (``--translate-test self``), with the same
    prompt as the endpoint translator (:func:`plug_lite.translate.build_text_messages`)."""

    def __init__(self, backend, *, max_new_tokens: int, seed: int = 0) -> None:
        self.backend, self.max_new_tokens, self.seed = backend, max_new_tokens, seed

    def __call__(self, text: str, *, source: str, target: str) -> str:
        from .translation import build_text_messages, split_text_reply

        gen = self.backend.generate(build_text_messages(text, target, source), max_new_tokens=self.max_new_tokens,
                                    temperature=0.0, seed=self.seed)
        out, why = split_text_reply(gen["output"])
        if out is None:
            raise llm.CallError(f"the model gave no {languages.get(target).name} translation: {why}")
        return out

    def public(self) -> dict:
        return {"kind": "self"}

    def close(self) -> None:
        pass


def translate_test_record(backend, translator, rec: dict, *, system: str | None, spec: PlugSpec, max_new_tokens: int,
                          temperature: float, seed: int, generator: str, decoding: dict) -> dict:
    """One translate-test answer (``spec``: a mono spec with the pivot to translate into):
    ``pivot_instruction`` is the translated instruction, ``pivot_response`` the model's answer in
    the pivot, ``answer`` / ``target_response`` that answer translated back. Any failed call
    raises :class:`plug_lite.llm.CallError`."""
    t0 = time.perf_counter()
    target, pivot = spec.target_language, spec.pivot_language
    pivot_instruction = translator(str(rec["instruction"]), source=target.code, target=pivot.code)
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": pivot_instruction}]
    gen = backend.generate(msgs, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    pivot_answer = gen["output"].strip()
    answer = translator(pivot_answer, source=pivot.code, target=target.code) if pivot_answer else ""
    # The usual line, with the three texts of this baseline: every generated token is the pivot's.
    record = AnswerRecord(
        output=gen["output"],
        answer=answer,
        status="not_found" if not pivot_answer else "truncated" if gen["finish_reason"] == "length" else "ok",
        target_response=answer if pivot_answer else None,
        pivot_instruction=pivot_instruction,
        pivot_response=pivot_answer or None,
        format=TRANSLATE_TEST,
        target=spec.target,
        pivot=pivot.code,
    )
    return _line(rec, record, gen, pivot_tokens=gen["completion_tokens"], target_tokens=None,
                 seconds=time.perf_counter() - t0, generator=generator, decoding=decoding)


def summarize(records: Iterable[dict]) -> dict:
    """Counts per parse status and mean pivot / target tokens."""
    recs = list(records)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1

    def mean(key: str) -> float | None:
        vals = [r["tokens"][key] for r in recs if r.get("tokens", {}).get(key) is not None]
        return round(sum(vals) / len(vals), 1) if vals else None

    return {"records": len(recs), "status": counts, "mean_pivot_tokens": mean("pivot"),
            "mean_target_tokens": mean("target"), "mean_completion_tokens": mean("completion")}


def answer_messages(rec: dict, system: str | None, prompted: PromptedPlug | None = None) -> list[dict]:
    """The chat messages that ask for one answer: the system prompt (if any) and the instruction;
    for prompted PLUG, the worked examples between them."""
    if prompted is not None:
        return prompted.messages(str(rec["instruction"]), system)
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": str(rec["instruction"])}]


def answer_spec(fmt: str, target: str, pivot: str = "en", system: str | None = None, think: bool = False,
                translate_test: bool = False, prompted: PromptedPlug | None = None) -> tuple[PlugSpec, str | None]:
    """(the spec of the answers, the system prompt they are asked with): ``system`` when given,
    else the format's own; the translate-test baseline answers as a mono model of the pivot;
    prompted PLUG answers as a PLUG model, asked with the prompted instruction."""
    if prompted is not None:
        return prompted.spec, system if system is not None else prompted.system_prompt()
    if translate_test:
        spec = PlugSpec("mono", target, pivot)
        # the model answers in the pivot: the mono prompt of the pivot language
        return spec, system if system is not None else PlugSpec("mono", spec.pivot_language).system_prompt()
    spec = PlugSpec(fmt, target, pivot, think and fmt == "plug")
    return spec, system if system is not None else spec.system_prompt()


class BatchAnswers:
    """The endpoint backend's answers as a batch engine gave them: :meth:`generate` reads the
    call cache (keyed by :meth:`key` of the request body) instead of calling; an answer not there
    is a :class:`plug_lite.llm.CallError` with the batch's reason (``failed``)."""

    name = "openai"
    give_up_after = None  # a missing answer says nothing about the next one

    def __init__(self, model_name: str, cache: llm.CallCache) -> None:
        self.model_name = self.default_name = model_name
        self.fingerprint = {"model": model_name}
        self.cache = cache
        self.failed: dict[str, str] = {}

    def body(self, messages: list[dict], *, max_new_tokens: int, temperature: float, seed: int) -> dict:
        return llm.chat_body(self.model_name, messages, temperature=temperature, max_tokens=max_new_tokens, seed=seed)

    @staticmethod
    def key(body: dict) -> str:
        return llm.cache_key(task="generate", body=body)

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, seed: int) -> dict:
        k = self.key(self.body(messages, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed))
        rec = self.cache.get(k)
        if rec is None:
            raise llm.CallError(self.failed.get(k, "no answer from the batch"))
        usage = rec.get("usage") or {}
        return {"output": rec.get("text") or "", "finish_reason": rec.get("finish_reason") or "stop",
                "prompt_tokens": usage.get("prompt"), "completion_tokens": usage.get("completion"), "pieces": None}

    def close(self) -> None:
        self.cache.close()


class BatchAnswersFirst:
    """A live endpoint backend that first takes the answers a batch engine already gave: those in
    the call cache ``OUT.calls.jsonl`` under the key of the very body ``live`` sends (an expired
    batch's part, a batch collected while another still runs). A run switched from ``--batch`` to
    live buys none of them again; anything else is asked of ``live``."""

    def __init__(self, live: OpenAIBackend, cache: llm.CallCache) -> None:
        self.live = live
        self.batch = BatchAnswers(live.model_name, cache)

    def __getattr__(self, name: str):
        return getattr(self.live, name)

    def generate(self, messages: list[dict], *, max_new_tokens: int, temperature: float, seed: int) -> dict:
        k = self.batch.key(self.live.body(messages, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed))
        engine = self.batch if k in self.batch.cache else self.live
        return engine.generate(messages, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)

    def close(self) -> None:
        try:
            self.live.close()
        finally:
            self.batch.close()


def calls_cache_path(out: str | os.PathLike) -> Path:
    """The call cache of the answers a batch engine gave for ``out``: ``OUT.calls.jsonl``."""
    return Path(out).with_name(Path(out).stem + ".calls.jsonl")


def generate(backend, records: list[dict], out: str | os.PathLike, *, fmt: str, target: str, pivot: str = "en",
             system: str | None = None, max_new_tokens: int = 1024, temperature: float = 0.0, seed: int = 0,
             generator: str | None = None, progress: bool = True, think: bool = False, translator=None,
             prompted: PromptedPlug | None = None, force_resume: bool = False) -> dict:
    """Answer ``records`` into ``out`` (appending; ids already there are skipped). Returns the
    summary of the whole file, with this run's ``made`` and ``failed`` answers and the
    ``first_error``. An answer whose call fails (an endpoint's error after its retries, an
    unusable translation) is not written, so a rerun tries it again; after
    :data:`GIVE_UP_AFTER` failures in a row the run stops (``stopped``).

    ``translator`` (``text, source=, target= -> text``) makes it the translate-test baseline:
    format ``translate_test``, the model answers the translated instruction in the pivot language
    (system prompt: answer in the pivot) and its answer is translated back.

    ``prompted`` makes it prompted PLUG (:mod:`plug_lite.prompted`): the model is asked with the
    PLUG instruction and worked examples, its output parsed as a PLUG model's, format
    ``plug_prompted``.

    A rerun continues ``out`` only when it would answer as the run that wrote it: the model (its
    file's identity, :func:`plug_lite.io.file_identity`, not its name), the LoRA, the system
    prompt, the decoding (``max_new_tokens``, ``temperature``, the seed when sampling), the
    translator, the prompted-PLUG examples and the generator name are recorded in each line's
    ``decoding`` and compared with the last line's; a difference is a one-line error naming the
    setting, unless ``force_resume``. Answers of another format or target language are never added."""
    spec, system, fmt, generator, decoding = _answer_settings(
        backend, fmt=fmt, target=target, pivot=pivot, system=system, think=think, translator=translator,
        prompted=prompted, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, generator=generator)
    done = _continued(out, fmt=fmt, target=spec.target, generator=generator, decoding=decoding,
                      temperature=temperature, force_resume=force_resume)
    done_ids = {str(d["id"]) for d in done}
    todo = [r for r in records if str(r["id"]) not in done_ids]
    bar = _progress(len(records), len(records) - len(todo), progress)
    written: list[dict] = []
    failed: list[str] = []
    in_a_row = 0
    with JsonlAppender(out) as app:
        for rec in todo:
            try:
                if translator is not None:
                    row = translate_test_record(backend, translator, rec, system=system, spec=spec,
                                                max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                                                generator=generator, decoding=decoding)
                else:
                    t0 = time.perf_counter()
                    gen = backend.generate(answer_messages(rec, system, prompted), max_new_tokens=max_new_tokens,
                                           temperature=temperature, seed=seed)
                    row = answer_record(rec, gen, spec=spec, seconds=time.perf_counter() - t0,
                                        generator=generator, decoding=decoding)
                    if prompted is not None:  # parsed as a PLUG model's answer, recorded as prompted
                        row["format"] = PROMPTED
            except llm.CallError as e:
                failed.append(f"id {rec['id']}: {e}")
                in_a_row += 1
                if in_a_row >= (getattr(backend, "give_up_after", GIVE_UP_AFTER) or len(todo) + 1):
                    break
                continue
            in_a_row = 0
            app.write(row)
            written.append(row)
            if bar:
                bar.update(1)
                bar.set_postfix_str(row["status"])
    if bar:
        bar.close()
    wanted = {str(r["id"]) for r in records}
    summary = summarize([d for d in done + written if str(d["id"]) in wanted])
    not_tried = len(todo) - len(written) - len(failed)
    summary.update(made=len(written), failed=len(failed), first_error=failed[0] if failed else None,
                   stopped=not_tried > 0, not_tried=not_tried)
    return summary


def _answer_settings(backend, *, fmt: str, target: str, pivot: str, system: str | None, think: bool, translator,
                     prompted: PromptedPlug | None, max_new_tokens: int, temperature: float, seed: int,
                     generator: str | None) -> tuple[PlugSpec, str | None, str, str, dict]:
    """(spec, system prompt, format, generator name, ``decoding``) of a run: what each line records
    and a resume compares."""
    spec, system = answer_spec(fmt, target, pivot, system, think, translator is not None, prompted)
    if translator is not None:
        fmt = TRANSLATE_TEST
    if prompted is not None:
        fmt = PROMPTED
    generator = generator or backend.default_name
    decoding = {"backend": backend.name, "temperature": temperature, "max_new_tokens": max_new_tokens,
                "greedy": temperature <= 0, "seed": seed, **getattr(backend, "fingerprint", {}),
                "system": hashlib.sha256(system.encode("utf-8")).hexdigest()[:16] if system else None}
    if translator is not None:
        decoding["translator"] = translator.public()
    if prompted is not None:
        decoding["prompted"] = prompted.public()
    return spec, system, fmt, generator, decoding


def _continued(out: str | os.PathLike, *, fmt: str, target: str, generator: str, decoding: dict, temperature: float,
               force_resume: bool) -> list[dict]:
    """The answers already in ``out``, when this run may add to them: same format and target
    language always; the same generator and decoding unless ``force_resume`` (one line naming the
    setting otherwise)."""
    done = [upgrade_answer(d) for d in read_jsonl_resumable(out)]
    if done:
        last = done[-1]
        for key, want in (("format", fmt), ("target", target)):  # never mixed in one file
            if last.get(key) != want:
                raise UserError(f"{out}: holds answers with {key}={last.get(key)!r}, this run has {want!r}: "
                                "use another --out file")
        recorded = _compared({"generator": last.get("generator"), **(last.get("decoding") or {})})
        now = _compared({"generator": generator, **decoding})  # (the system prompt names the pivot language)
        if temperature <= 0:  # greedy answers do not depend on the seed
            del now["seed"]
        refuse_changed(str(out), recorded, now, made="holds answers made", instead="another --out file",
                       force=force_resume)
    return done


def _compared(settings: dict) -> dict:
    """What a resume compares of a line's settings: not ``greedy`` (the temperature says it), nor
    where a translator is served and how long it is waited for (its model and decoding are kept)."""
    out = {k: v for k, v in settings.items() if k != "greedy"}
    if isinstance(out.get("translator"), dict):
        out["translator"] = {k: v for k, v in out["translator"].items() if k not in ("base_url", "timeout", "max_retries")}
    return out


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="generate", unit="answer", file=sys.stderr, dynamic_ncols=True)


def main(
    model: str | None = None,
    *,
    eval_set: str,
    out: str,
    target: str | None = None,
    fmt: str | None = None,
    pivot: str | None = None,
    backend: str | None = None,
    endpoint: llm.LLMSettings = ENDPOINT,
    base: str | None = None,
    limit: int | None = None,
    system: str | None = None,
    max_new_tokens: int = 1024,
    temperature: float = 0.0,
    seed: int = 0,
    generator: str | None = None,
    options: EngineOptions = EngineOptions(),
    progress: bool = True,
    translate_test: str | None = None,
    translator: llm.LLMSettings = llm.LLMSettings(),
    prompted: bool = False,
    shots: int = 2,
    examples: str | None = None,
    batch_opts: llm_batch.BatchOptions = llm_batch.BatchOptions(),
    force_resume: bool = False,
) -> dict:
    """Answer every instruction of ``eval_set`` with ``model`` into ``out``; returns the summary
    (see :func:`generate`).

    Args:
        model: a .gguf file, an HF model folder or a training run folder (adapter)
        eval_set: evaluation set name or a JSON/JSONL/CSV file with id and instruction
        out: output JSONL (appended; rerun to resume)
        target: target language code (default: the model's plug.target / plug_run.json)
        fmt: answer format (default: the model's, else plug)
        pivot: pivot language (default: the model's, else en)
        backend: llama.cpp, transformers or openai (default: from the model path / --base-url)
        endpoint: the OpenAI-compatible endpoint of the openai backend (its fields are flags)
        endpoint.model: model name at the endpoint (default: its first listed model)
        endpoint.base_url: OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1
        endpoint.api_key: endpoint key (default: $OPENAI_API_KEY); never printed
        endpoint.max_retries: endpoint retries with backoff (the translator's too)
        base: base model folder for an adapter (default: from adapter_config.json)
        limit: answer the first N instructions only
        system: system prompt (default: the format's own)
        max_new_tokens: tokens per answer
        temperature: 0 = greedy (default, as the paper)
        seed: sampling seed (llama.cpp's too)
        generator: name written in each record (default: from the model)
        options: how llama.cpp loads a .gguf model (--ctx, --gpu-layers, --threads, --lora, --verbose)
        progress: show a progress bar
        translate_test: the translate-test baseline: translate each instruction into the pivot,
            answer it there, translate the answer back; with an LLM endpoint (llm, the default) or
            the model itself (self)
        translator: the translator's endpoint for --translate-test llm; it retries as the endpoint
            does (--max-retries) and answers in up to twice --max-new-tokens (at least 1024)
        translator.model: translator model (env PLUG_LITE_JUDGE_MODEL; default gpt-4o-mini)
        translator.base_url: translator endpoint (env PLUG_LITE_JUDGE_BASE_URL / OPENAI_BASE_URL)
        translator.api_key: translator key (prefer env OPENAI_API_KEY); never printed
        prompted: prompted PLUG: ask an instruct model (never trained on PLUG) for the PLUG format with an
            instruction and worked examples; answers parsed as a PLUG model's, format plug_prompted
        shots: prompted PLUG: worked examples in the prompt
        examples: prompted PLUG: file of worked examples (instruction, response, pivot_instruction,
            pivot_response; default: the shipped sample's); never the evaluation set
        batch_opts: endpoint answers through a batch engine (the flags --write-requests,
            --read-results, --batch, --batch-wait; :mod:`plug_lite.llm_batch`); the model's name
            there is --model-name (else MODEL)
        force_resume: add to an --out file whose answers were made with another model, LoRA,
            system prompt, decoding or translator (refused by default, naming the setting)
    """
    refuse_overwrite({"--out": out, **batch_opts.outputs()},
                     {"--eval-set": eval_set, "MODEL": model, "--lora": options.lora, "--base": base,
                      **batch_opts.inputs()})
    if model is not None and batch_opts.check().mode == "live":  # (a batch engine's MODEL is a name)
        backend_kind(model, backend, endpoint)  # a missing model file is the first thing to say
    recorded = recorded_spec(model)
    target = target or recorded.get("target")
    if not target:
        raise UserError("no target language: pass --target CODE (the model records none)")
    records = load_instructions(eval_set, target, limit)
    plug_prompt = None
    if prompted:
        if translate_test is not None or fmt not in (None, "plug"):
            raise UserError("--prompted asks for the PLUG format itself: drop --translate-test / --format")
        plug_prompt = PromptedPlug.build(target, pivot or recorded.get("pivot") or "en", shots=shots,
                                         examples=examples, exclude=[str(r["instruction"]) for r in records])
    elif examples is not None:
        raise UserError("--examples are the worked examples of --prompted")
    if batch_opts.check().mode != "live":
        if translate_test is not None:
            raise UserError("--translate-test makes three calls in a row per answer: it runs live only (drop "
                            "--write-requests / --read-results / --batch)")
        if backend not in (None, "openai"):
            raise UserError(f"--backend {backend} answers locally: --write-requests / --read-results / --batch are "
                            "for an endpoint's model (--backend openai)")
        return _via_batch(records, out, batch_opts, replace(endpoint, model=endpoint.model or model),
                          fmt=fmt or recorded.get("format") or "plug",
                          target=target, pivot=pivot or recorded.get("pivot") or "en", system=system,
                          think=bool(recorded.get("think")), max_new_tokens=max_new_tokens, temperature=temperature,
                          seed=seed, generator=generator, progress=progress, prompted=plug_prompt,
                          force_resume=force_resume)
    tt_cfg = None
    if translate_test is not None:
        if translate_test not in ("llm", "self"):
            raise UserError(f"--translate-test must be 'llm' or 'self' (got {translate_test!r})")
        if fmt:
            raise UserError("--translate-test answers in its own format (translate_test): drop --format")
        if translate_test == "llm":
            tt_cfg = replace(translator, max_retries=endpoint.max_retries,
                             max_tokens=max(1024, 2 * max_new_tokens)).resolved()
    be = make_backend(model, backend=backend, endpoint=endpoint, base=base, options=replace(options, seed=seed))
    if isinstance(be, OpenAIBackend) and calls_cache_path(out).exists():  # a batch run's answers come first
        be = BatchAnswersFirst(be, llm.CallCache(calls_cache_path(out)))
    to_pivot_and_back = None  # the translate-test baseline's translator
    try:
        fmt = fmt or recorded.get("format") or "plug"
        pivot = pivot or recorded.get("pivot") or "en"
        if tt_cfg is not None:
            from .translation import TextTranslator

            to_pivot_and_back = TextTranslator(tt_cfg, Path(out).with_name(Path(out).stem + ".translate-cache.jsonl"))
        elif translate_test == "self":
            to_pivot_and_back = SelfTranslator(be, max_new_tokens=2 * max_new_tokens, seed=seed)
        summary = generate(be, records, out, fmt=fmt, target=target, pivot=pivot, system=system,
                           max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                           generator=generator, progress=progress, think=bool(recorded.get("think")),
                           translator=to_pivot_and_back, prompted=plug_prompt, force_resume=force_resume)
    finally:
        if to_pivot_and_back is not None:
            to_pivot_and_back.close()
        be.close()
    return summary


def _via_batch(records: list[dict], out: str, opts: llm_batch.BatchOptions, endpoint: llm.LLMSettings, *,
               fmt: str, target: str, pivot: str, system: str | None, think: bool, max_new_tokens: int,
               temperature: float, seed: int, generator: str | None, progress: bool,
               prompted: PromptedPlug | None = None, force_resume: bool = False) -> dict:
    """:func:`generate` with the endpoint's answers from a batch engine: the requests of the
    answers not yet in ``out`` are written, read or submitted (``opts``; with ``--batch`` to
    ``endpoint``), then the records are written from the call cache ``OUT.calls.jsonl``."""
    model_name = endpoint.model
    if not model_name:
        raise UserError("a batch engine needs the model's name: pass --model-name NAME (what the engine serves, "
                        "e.g. the --model of vllm run-batch)")
    cache_p = calls_cache_path(out)
    answers = BatchAnswers(model_name, llm.CallCache(cache_p))
    try:
        # refused before any request is written or sent, as a live run would be
        spec, system, fmt_now, name, decoding = _answer_settings(
            answers, fmt=fmt, target=target, pivot=pivot, system=system, think=think, translator=None,
            prompted=prompted, max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, generator=generator)
        done = {str(d.get("id")) for d in _continued(out, fmt=fmt_now, target=spec.target, generator=name,
                                                       decoding=decoding, temperature=temperature,
                                                       force_resume=force_resume)}
        calls = []
        for rec in records:
            if str(rec["id"]) not in done:
                body = answers.body(answer_messages(rec, system, prompted), max_new_tokens=max_new_tokens,
                                    temperature=temperature, seed=seed)
                calls.append(llm_batch.Call(answers.key(body), body,
                                            {"job": "generate", "id": str(rec["id"]), "target": target,
                                             "format": PROMPTED if prompted else fmt}))
        cached = sum(1 for c in calls if c.key in answers.cache)
        cfg = None
        if opts.mode == "batch":
            cfg = replace(endpoint, api_key=endpoint.api_key or os.environ.get("OPENAI_API_KEY") or "no-key")
        sent = llm_batch.dispatch(calls, answers.cache, opts, cfg=cfg, ledger=llm_batch.ledger_path(cache_p),
                                  job="generate")
        if not sent.finished:
            return {"unfinished": sent.message(), "batch": sent.public()}
        answers.failed = sent.failed
        summary = generate(answers, records, out, fmt=fmt, target=target, pivot=pivot, system=system,
                           max_new_tokens=max_new_tokens, temperature=temperature, seed=seed,
                           generator=generator, progress=progress, think=think, prompted=prompted,
                           force_resume=force_resume)
    finally:
        answers.close()
    summary["calls"] = {"cached": cached, "by_batch": sent.by_batch, "failed": len(sent.failed), "batch": sent.public()}
    return summary


def _finish(s: dict, args: dict) -> int:
    """What ``plug-lite generate`` prints, and its exit status."""
    if "unfinished" in s:
        print(s["unfinished"], file=sys.stderr)
        return 0
    rc, line = llm.run_outcome(made=s["made"], failed=s["failed"], what="answers", first_error=s["first_error"])
    if line and s["stopped"]:
        line += f"; stopped after {GIVE_UP_AFTER} failures in a row, {s['not_tried']} not tried"
    if rc == llm.EXIT_ALL_FAILED:
        print(f"error: {redact(line)}", file=sys.stderr)
        return rc
    st = ", ".join(f"{k} {v}" for k, v in sorted(s["status"].items()))
    print(f"{args['out']}: {s['records']} answers ({st}); mean tokens: pivot {s['mean_pivot_tokens']}, "
          f"target {s['mean_target_tokens']}", file=sys.stderr)
    if "calls" in s:
        c = s["calls"]
        print(llm.calls_summary(made=0, cached=c["cached"], by_batch=c["by_batch"], failed=c["failed"]), file=sys.stderr)
    if line:
        print(f"warning: {redact(line)}", file=sys.stderr)
    return rc


def cli(argv: list[str] | None = None) -> int:
    ap = parser_for(main, prog="plug-lite generate", positional=("model",),
                    names={"target": ("--target", "--lang"), "fmt": "--format", "endpoint.model": "--model-name",
                           "translator.model": "--translator-model", "translator.base_url": "--translator-base-url",
                           "translator.api_key": "--translator-api-key"},
                    exclude=("endpoint.timeout", "endpoint.temperature", "endpoint.max_tokens", "translator.timeout",
                             "translator.max_retries", "translator.temperature", "translator.max_tokens",
                             "options.seed"),
                    choices={"fmt": FORMATS, "backend": ("llama.cpp", "transformers", "openai")},
                    extra={"translate_test": {"nargs": "?", "const": "llm", "choices": ("llm", "self")}})
    args = parse(ap, main, argv)

    def body() -> int:
        try:
            s = main(**args)
        except llm.CallError as e:  # the endpoint failed before the first answer (listing its models)
            print(f"error: {redact(str(e))}", file=sys.stderr)
            return llm.EXIT_ALL_FAILED
        return _finish(s, args)

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(cli())
