"""``plug-lite share RUN_DIR_OR_GGUF_DIR``: a model card, Ollama files, and a Hub upload.

Writes, into ``--out-dir`` (a run's ``share/`` folder, or the GGUF folder itself):

* ``README.md`` — a Hub model card: YAML front matter (base model, languages, licence, tags), the
  files with their quant type and size, how far each quantized file drifts from the F16 by language
  and which one is recommended (export's drift check), how the model was trained (from ``plug_run.json``), the PLUG
  output format with an example rendered by :func:`plug_lite.formats.render`, and evaluation results
  when a report JSON is present.
* ``Modelfile`` — for ``ollama create``; ``template`` (Go template), ``params`` (JSON: stop
  sequences) and ``system`` — the files Ollama reads from a Hub repository for
  ``ollama run hf.co/<user>/<repo>:<QUANT>``. ``FROM`` and the card's commands name the
  recommended file (:func:`recommended`: the smallest quantized file whose parity check kept the
  fine-tune and whose target-language drift is within export's ``--max-drift``; the F16 stays the
  reference). The Go template is the one of the chat template's
  family (:func:`plug_lite.templates.family_of`: plug_lite's own templates and the common bases'
  ChatML/Qwen, Llama 3, Gemma, Mistral, Phi-3); the stops are the family's end of turn, the run's
  EOS and every end token the exported models ended their answers with in export's stops check.
  Other Jinja templates are not translated: the card says so and Ollama falls back to the
  template in the GGUF.

``--push user/repo`` uploads the GGUF files and these files in one commit with huggingface_hub
(token from ``HF_TOKEN`` or ``huggingface-cli login``; never printed or written). ``--dry-run``
lists what would be uploaded and uploads nothing.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import drift, formats, gguf_meta, runs, templates
from .cli import run
from .io import UserError, atomic_write_text, redact
from .languages import LanguageError
from .runs import ExportRecord, RunRecord
from .spec import EXPORT_KEY, PlugSpec

__all__ = ["Shared", "recommended", "ollama_files", "model_card", "collect", "upload", "main", "cli"]

_EXAMPLE = {  # (instruction in the target language, its answer) for the card's format example
    "zh": ("用一句话介绍大海。", "大海广阔而深邃，覆盖了地球表面的大部分。"),
    "ko": ("바다를 한 문장으로 소개해 주세요.", "바다는 지구 표면의 대부분을 덮고 있는 넓고 깊은 물입니다."),
    "it": ("Descrivi il mare in una frase.", "Il mare è una vasta distesa d'acqua che copre gran parte della Terra."),
    "es": ("Describe el mar en una frase.", "El mar es una enorme masa de agua que cubre gran parte de la Tierra."),
}
_EXAMPLE_PIVOT = ("Describe the sea in one sentence.", "The sea is a vast body of water that covers most of the Earth.")

_NC_NOTE = ("Evaluation outputs produced on X-AlpacaEval are derived from a dataset released under "
            "CC BY-NC 4.0: share them for non-commercial use only.")


# --------------------------------------------------------------------------------------------
# What to share


def _quant_of(path: Path) -> str:
    stem = path.stem
    if stem.endswith("-LoRA-F16") or "-LoRA-" in stem:
        return "LoRA adapter (" + stem.rsplit("-", 1)[-1] + ")"
    return stem.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Shared:
    """What :func:`collect` found to share: the run's record (from ``plug_run.json``, or made from
    the GGUF metadata of a folder of GGUF files), the files with their labels, and the export
    report when there is a run."""

    run: RunRecord
    files: list[Path]
    labels: dict[str, str]
    export: ExportRecord | None
    dir: Path
    default_out: Path
    template_family: str | None = None  # plug_lite.templates.family_of the model's chat template

    @property
    def has_run(self) -> bool:
        return self.export is not None


def collect(path: str | os.PathLike) -> Shared:
    """The run metadata and GGUF files behind a run directory or a folder of GGUF files."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: not a folder (expected a run directory or a folder of GGUF files)")
    rec: RunRecord | None = None
    report: ExportRecord | None = None
    labels: dict[str, str] = {}
    if runs.is_finished(p):
        rec = RunRecord.load(p)
        report = runs.read_export_report(p)
        if report.verify is not None and not report.verify.passed:
            raise UserError(f"{p / runs.EXPORT_REPORT}: the last export failed its check and kept no file "
                            f"({report.verify.error}); run `plug-lite export {p}` again")
        files = [f.path for f in report.files.values()]
        labels = {f.path.name: k for k, f in report.files.items()}
        if report.adapter_gguf:
            files.append(report.adapter_gguf)
        if report.base_gguf:
            files.append(report.base_gguf)
            labels[files[-1].name] = _BASE_LABEL
        files = [f if f.is_absolute() else Path.cwd() / f for f in files]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UserError(f"{p / runs.EXPORT_REPORT}: listed file {missing[0]} is missing; run `plug-lite export {p}` again")
        for f in files:  # none replaced by another run's export since (the base's file has no PLUG keys)
            if not report.export_id or labels.get(f.name) == _BASE_LABEL:
                continue
            got = gguf_meta.read_metadata(f).get(EXPORT_KEY)
            if got != report.export_id:
                raise UserError(f"{f}: another export replaced it after this run's ({EXPORT_KEY} is {got or 'missing'}, "
                                f"{runs.EXPORT_REPORT} says {report.export_id}); run `plug-lite export {p}` again")
        default_out = p / "share"
    else:
        files, labels = _one_model(p)
        default_out = p
    # The first model file (not the adapter) tells what a folder of GGUF files is, and the chat
    # template when the run recorded none.
    model_files = [f for f in files if "LoRA" not in _quant_of(f)]
    md = gguf_meta.read_metadata((model_files or files)[0])
    template_name = templates.name_of(templates.without_default_system(md.get("tokenizer.chat_template") or ""))
    family = templates.family_of(md.get("tokenizer.chat_template"))
    if rec is None:
        values = PlugSpec.gguf_values(md)
        if not values.get("format") or not values.get("target"):
            raise UserError(f"{p}: cannot tell the PLUG format and target language (no plug_run.json, no plug.* keys in the GGUF)")
        try:  # a bad combination is reported here, naming the folder
            spec = PlugSpec(values["format"], values["target"], values.get("pivot"), bool(values.get("think")))
        except LanguageError as e:
            raise UserError(f"{p}: {e}") from None
        rec = RunRecord(spec, base_name=md.get("general.basename") or md.get("general.name"),
                        chat_template_name=template_name, eos_token=templates.STOP.get(template_name or family or ""))
    elif not rec.chat_template_name:
        rec = replace(rec, chat_template_name=template_name)
    labels = {f.name: labels.get(f.name) or _quant_of(f) for f in files}
    return Shared(run=rec, files=files, labels=labels, export=report, dir=p, default_out=default_out,
                  template_family=rec.chat_template_name if rec.chat_template_name in templates.GO else family)


_BASE_LABEL = "F16, untuned base (for the LoRA)"


def _one_model(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """(files, labels) of the one model a folder of GGUF files holds: its model files (``plug.*``
    keys, one architecture and ``general.name``: export writes its reference file's name into every
    quantized file), its LoRA adapter and, with an adapter, the untuned base beside it. A folder
    with the files of several models (export's default ``gguf/`` holds every run's) is refused:
    one card and one upload would mix them. Other GGUF files (an importance matrix, an unrelated
    model without PLUG keys) are left out, and the command says so."""
    metas = {f: gguf_meta.read_metadata(f) for f in sorted(folder.glob("*.gguf"))}
    if not metas:
        raise UserError(f"{folder}: no plug_run.json and no .gguf files")

    def spec_of(md: dict) -> tuple:
        return md.get("general.architecture"), tuple(sorted(PlugSpec.gguf_values(md).items()))

    groups: dict[tuple, list[Path]] = {}
    for f, md in metas.items():
        if PlugSpec.gguf_values(md) and md.get("general.type", "model") == "model":
            groups.setdefault((spec_of(md), md.get("general.name")), []).append(f)
    if not groups:
        raise UserError(f"{folder}: cannot tell the PLUG format and target language (no plug_run.json, no plug.* keys in the GGUF)")
    if len(groups) > 1:
        each = "; ".join(", ".join(f.name for f in fs) for fs in groups.values())
        raise UserError(f"{folder}: GGUF files of {len(groups)} different models ({each}): share a run folder "
                        "(plug-lite share RUN_DIR) or put one model's files in a folder of their own")
    (spec, _), files = next(iter(groups.items()))
    adapters = [f for f, md in metas.items() if md.get("general.type") == "adapter" and spec_of(md) == spec]
    bases = [f for f, md in metas.items() if adapters and not PlugSpec.gguf_values(md)
             and md.get("general.type", "model") == "model" and md.get("general.architecture") == spec[0]]
    files = [*files, *adapters, *bases]
    left = [f.name for f in metas if f not in files]
    if left:
        print(f"note: left out {', '.join(left)} (not a file of the model {files[0].name} belongs to)", file=sys.stderr)
    return files, {f.name: _BASE_LABEL for f in bases}


_REFERENCE_TYPES = ("F32", "BF16", "F16")


def recommended(info: Shared) -> Path | None:
    """The file to run: the smallest quantized model file that kept the fine-tune (its greedy
    answers in export's parity check stayed closer to the merged model than to the untuned base;
    files without a check count as kept) and, when export measured drift, whose target-language
    drift is within ``--max-drift``; the reference (F16) when no quantized file qualifies."""
    models = [f for f in info.files if "LoRA" not in _quant_of(f) and info.labels.get(f.name) != _BASE_LABEL]
    greedy = info.export.verify.greedy if info.export and info.export.verify else {}
    drift = _drift(info)

    def kept(f: Path) -> bool:
        score = greedy.get(info.labels.get(f.name, _quant_of(f)))
        return score is None or score.agreement_with_base <= score.agreement_with_merged

    def within(f: Path) -> bool:
        if drift is None:
            return True
        measured = drift.files.get(_quant_of(f).upper())
        kl = measured.kl(drift.target) if measured is not None else None
        return kl is not None and kl <= drift.max_drift

    quantized = [f for f in models if _quant_of(f).upper() not in _REFERENCE_TYPES and kept(f) and within(f)]
    if quantized:
        return min(quantized, key=lambda f: f.stat().st_size)
    return models[0] if models else None


def end_tokens(export: ExportRecord | None) -> list[str]:
    """The end tokens the exported models ended their answers with in export's stops check."""
    if export is None or export.verify is None:
        return []
    return list(dict.fromkeys(e for st in export.verify.stops.values() for e in st.ends))


# --------------------------------------------------------------------------------------------
# Ollama


def ollama_files(run: RunRecord, gguf_file: str | None, *, family: str | None = None,
                 ends: list[str] = ()) -> dict[str, str]:
    """``Modelfile``, ``template``, ``params`` and ``system`` texts (``template`` is absent when the
    chat template is not one plug_lite can translate to Go). ``family``: the chat template's
    family (default: the run's template name); ``ends``: end tokens the model was seen to end
    answers with (:func:`end_tokens`)."""
    name = family or run.chat_template_name
    system = run.spec.system_prompt()
    stops = [templates.STOP[name]] if name in templates.STOP else []
    stops += [s for s in dict.fromkeys([run.eos_token, *ends]) if s and s not in stops]
    params = {"stop": stops, "num_ctx": 2048}
    out = {"params": json.dumps(params, ensure_ascii=False, indent=2) + "\n", "system": system + "\n"}
    lines = [f"FROM ./{gguf_file or 'model.gguf'}"]
    if name in templates.GO:
        out["template"] = templates.GO[name]
        lines.append(f'TEMPLATE """{templates.GO[name]}"""')
    else:
        lines.append(f"# The chat template ({name or 'a custom Jinja template'}) cannot be translated to Go automatically:")
        lines.append("# Ollama uses the template stored in the GGUF, or write TEMPLATE yourself.")
    lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    lines.append(f"PARAMETER num_ctx {params['num_ctx']}")
    out["Modelfile"] = "\n".join(lines) + "\n"
    return out


# --------------------------------------------------------------------------------------------
# Model card


def _example(spec: PlugSpec) -> tuple[str, str]:
    instr, answer = _EXAMPLE.get(spec.target, ("…", "…"))
    text = formats.render(spec.format, target=spec.target, pivot=spec.pivot_language, think=spec.think,
                          pivot_instruction=_EXAMPLE_PIVOT[0], pivot_response=_EXAMPLE_PIVOT[1], target_response=answer)
    return instr, text


def _flatten(obj: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    if isinstance(obj, dict) and depth < 3:
        for k, v in obj.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
    elif isinstance(obj, (int, float, bool)) or (isinstance(obj, str) and len(obj) < 80):
        rows.append((prefix, obj))
    return rows


def _drift(info: Shared) -> runs.DriftReport | None:
    ver = info.export.verify if info.export else None
    return ver.drift if ver is not None else None


def _drift_section(info: Shared) -> list[str]:
    """The card's drift table and the importance matrix the files were made with."""
    rep = _drift(info)
    im = info.export.imatrix if info.export else None
    if rep is None and (im is None or not im.used):
        return []
    out = [f"## How far each file drifts from the {rep.reference if rep is not None else 'F16'}", ""]
    if rep is not None:
        out += drift.markdown(rep) + [""]
        best = recommended(info)
        out.append(f"Recommended: `{best.name}`, the smallest file within the threshold that kept the fine-tune."
                   if best is not None and rep.recommended else f"No file is within the threshold of {rep.max_drift:g}.")
        out += ["", "KL divergence per token of the file's next-token distribution from the reference's, on held-out "
                "PLUG text; top-1: how often both put the same token first. Low-bit files usually drift more in "
                "the target language than in the pivot.", ""]
    if im is not None and im.used:
        out += [f"Quantized with an importance matrix from {im.source} ({im.tokens} tokens).", ""]
    return out


def _is_repo_id(s: str | None) -> bool:
    return bool(s) and re.fullmatch(r"[\w.-]+/[\w.-]+", s) is not None and not Path(s).exists()


def model_card(info: Shared, *, repo: str | None, license: str, eval_report: dict | None,
               ollama: dict[str, str]) -> str:
    rec, files = info.run, info.files
    spec = rec.spec
    fmt, target, pivot = spec.format, spec.target, spec.pivot_language.code
    t_lang, p_lang = spec.target_language, spec.pivot_language
    title = " ".join(x for x in (rec.base_name, rec.size_label) if x) or "model"
    tag = {"plug": "PLUG", "mono": "mono-response", "pivot_only": "pivot-only"}[fmt]
    langs = [target] + ([pivot] if fmt != "mono" and pivot != target else [])
    fm = ["---"]
    if _is_repo_id(rec.base_model):
        fm.append(f"base_model: {rec.base_model}")
        fm.append("base_model_relation: quantized")
    fm.append("language:")
    fm += [f"- {l}" for l in langs]
    fm.append(f"license: {license}")
    fm += ["tags:", "- gguf", "- llama-cpp", "- plug", "pipeline_tag: text-generation", "---", ""]

    body = [f"# {title} — {tag} ({t_lang.name}) GGUF", ""]
    if fmt == "plug":
        body.append(
            f"A {title} model instruction-tuned with PLUG (Pivot Language gUided Generation, Zhang et al., ACL 2024) "
            f"for {t_lang.name}: given an instruction in {t_lang.name}, it first restates and answers it in "
            f"{p_lang.name}, then writes the final answer in {t_lang.name}.")
    else:
        body.append(f"A {title} model instruction-tuned in the {tag} format for {t_lang.name} (a PLUG baseline).")
    body += ["", "## Files", "", "| file | type | size |", "|---|---|---|"]
    for f in files:
        body.append(f"| `{f.name}` | {info.labels[f.name]} | {f.stat().st_size / 2**20:.1f} MiB |")
    body += ["", "Q8_0 keeps a small fine-tune best; Q4_K_M can round a light LoRA back onto the base's weights. "
             "The LoRA GGUF applies on top of a base GGUF with llama.cpp (`--lora`).", ""]
    body += _drift_section(info)

    best = recommended(info)
    quant = best.name if best else "model.gguf"
    qtag = _quant_of(Path(quant))
    repo_s = repo or "<user>/<repo>"
    body += ["## Use", "", "```sh",
             f"llama-cli -m {quant} -cnv   # chat template and stop token are in the file",
             f"ollama run hf.co/{repo_s}:{qtag}",
             f"python -m plug_lite.chat {quant}   # hides the {p_lang.name} pivot while it streams",
             "```", ""]
    if "template" not in ollama:
        body += ["The chat template is not one plug_lite can translate to an Ollama Go template (it cannot "
                 "translate arbitrary Jinja); Ollama falls back to the template stored in the GGUF.", ""]
    instr, example = _example(spec)
    body += ["## Output format", "", f"System prompt: *{spec.system_prompt()}*", "",
             f"Instruction: {instr}", "", "Answer:", "", "```text", example, "```", ""]
    body += ["## Training", ""]
    rows = [("base model", rec.base_model), ("format", fmt), ("target / pivot", f"{target} / {pivot}"),
            ("backend", rec.backend), ("4-bit base (QLoRA)", rec.load_in_4bit),
            ("chat template", rec.chat_template_name)]
    sections = {"config": rec.config, "data_summary": rec.data_summary, "metrics": rec.metrics.to_dict(),
                "versions": rec.versions}
    for section, values in sections.items():
        rows += [(f"{section}.{k}", v) for k, v in _flatten(values)]
    rows = [(k, v) for k, v in rows if v not in (None, "")]
    if info.has_run:
        body += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    else:
        body += ["Not recorded (no plug_run.json): " + ", ".join(f"{k} {v}" for k, v in rows) + ".", ""]
    ver = info.export.verify if info.export else None
    if ver is not None:
        body += ["## Export checks", ""]
        for name, s in ver.greedy.items():
            body.append(f"- {name}: greedy output identical to the merged model on {s.identical_to_merged}/{s.prompts} prompts")
        body += [f"- warning: {w}" for w in ver.warnings] + [""]
    if eval_report:
        body += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        body += [f"| {k} | {v} |" for k, v in _flatten(eval_report) if not isinstance(v, str) or len(v) < 40][:40]
        body += ["", _NC_NOTE, ""]
    return "\n".join(fm + body)


# --------------------------------------------------------------------------------------------
# Upload


def _token() -> str:
    tok = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not tok:
        try:
            from huggingface_hub import get_token

            tok = get_token()
        except ImportError:
            raise UserError("huggingface_hub is not installed: pip install 'plug-lite[eval]'") from None
    if not tok:
        raise UserError("no Hugging Face token: set HF_TOKEN or run `huggingface-cli login`")
    return tok


def upload(repo: str, files: dict[str, Path], *, api=None, private: bool = False, message: str | None = None) -> str:
    """Create ``repo`` (if needed) and upload ``{path_in_repo: local file}`` in one commit."""
    if not _is_repo_id(repo):
        raise UserError(f"--push {repo!r}: expected user/repo")
    token = _token()
    from huggingface_hub import CommitOperationAdd

    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in files.items()]
    try:
        api.create_repo(repo_id=repo, repo_type="model", private=private, exist_ok=True, token=token)
        info = api.create_commit(repo_id=repo, repo_type="model", operations=ops, token=token,
                                 commit_message=message or "Upload PLUG GGUF files with plug-lite")
    except Exception as e:  # network, auth, quota: one line, no token
        raise UserError(f"upload to {repo} failed: {redact(str(e).splitlines()[0] if str(e) else type(e).__name__, [token])}") from None
    return getattr(info, "commit_url", None) or f"https://huggingface.co/{repo}"


# --------------------------------------------------------------------------------------------
# The command


def main(path: str | os.PathLike, *, out_dir: str | os.PathLike | None = None, push: str | None = None,
         dry_run: bool = False, license: str | None = None, eval_report: str | os.PathLike | None = None,
         private: bool = False, api=None) -> dict:
    """Write the card and Ollama files; upload with ``push``. Returns what was written/uploaded.

    Args:
        path: a run directory (after plug-lite export) or a folder of GGUF files
        out_dir: where to write README.md, Modelfile, template, params, system (default: RUN/share or the GGUF folder)
        push: upload to this Hugging Face model repository (USER/REPO)
        dry_run: list what would be uploaded; upload nothing
        license: licence id for the card (default: the base's, 'gemma' for Gemma, else 'other')
        eval_report: an evaluation report JSON to summarise in the card
        private: create the repository as private
        api: a huggingface_hub.HfApi (tests pass a stand-in)
    """
    info = collect(path)
    rec = info.run
    out = Path(out_dir) if out_dir else info.default_out
    ev = None
    ev_path = Path(eval_report) if eval_report else None
    if ev_path is None:
        for cand in ("eval_report.json", "report.json"):
            if (info.dir / cand).is_file():
                ev_path = info.dir / cand
                break
    if ev_path is not None:
        try:
            ev = json.loads(ev_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{ev_path}: cannot read the evaluation report ({e})") from None
    lic = license or ("gemma" if "gemma" in (rec.base_name or "").lower() else "other")
    best = recommended(info)
    main_file = best.name if best else None
    oll = ollama_files(rec, main_file, family=info.template_family, ends=end_tokens(info.export))
    card = model_card(info, repo=push, license=lic, eval_report=ev, ollama=oll)
    written = {"README.md": atomic_write_text(out / "README.md", card)}
    for name, text in oll.items():
        written[name] = atomic_write_text(out / name, text)
    if "template" not in oll:
        print(f"note: the chat template is not one of {', '.join(templates.GO)}; plug-lite cannot translate "
              "arbitrary Jinja to an Ollama Go template, so no `template` file was written", file=sys.stderr)
    uploads = {**{f.name: f for f in info.files}, **written}
    for name, p in written.items():
        print(f"wrote {p}")
    rep = _drift(info)
    if rep is not None:
        print(f"recommended: {main_file} (the smallest file that kept the fine-tune and whose {rep.target} mean KL from "
              f"{rep.reference} is within {rep.max_drift:g})" if rep.recommended else f"recommended: none (no file within --max-drift {rep.max_drift:g})")
    result: dict[str, Any] = {"written": {k: str(v) for k, v in written.items()}, "uploads": {k: str(v) for k, v in uploads.items()}}
    if push and dry_run:
        print(f"dry run: would upload to https://huggingface.co/{push}:")
        for name, p in uploads.items():
            print(f"  {name:<48} {p.stat().st_size / 2**20:9.1f} MiB")
    elif push:
        result["url"] = upload(push, uploads, api=api, private=private)
        print(f"uploaded {len(uploads)} files: {result['url']}")
        print(f"ollama run hf.co/{push}:{_quant_of(Path(main_file)) if main_file else 'Q4_K_M'}")
    else:
        print(f"not uploaded (use --push user/repo); would upload: {', '.join(uploads)}")
    return result


def cli(argv: list[str] | None = None) -> int:
    return run(main, argv, prog="plug-lite share", positional=("path",), exclude=("api",),
               extra={"push": {"metavar": "USER/REPO"}})


if __name__ == "__main__":
    raise SystemExit(cli())
