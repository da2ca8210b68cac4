"""The run folder and its two records: plug_run.json (RunRecord) and export_report.json
(ExportRecord). Files written by plug-lite 0.1 (tests/fixtures/v0.1) load, and are written back
with the same keys, nesting and order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plug_lite import runs
from plug_lite.io import UserError
from plug_lite.runs import ExportRecord, FourBit, RunRecord
from plug_lite.spec import PlugSpec

V01 = Path(__file__).parent / "fixtures" / "v0.1"


def _raw(name: str) -> dict:
    return json.loads((V01 / name).read_text(encoding="utf-8"))


def _run_folder(tmp_path: Path, record: dict | None = None, report: dict | None = None) -> Path:
    run = tmp_path / "runs" / "plug-zh"
    run.mkdir(parents=True)
    if record is not None:
        (run / runs.RUN_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    if report is not None:
        (run / runs.EXPORT_REPORT).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return run


# --------------------------------------------------------------------------------------------
# plug_run.json


def test_a_run_of_0_1_loads_with_every_field(tmp_path):
    run = _run_folder(tmp_path)
    shutil.copy(V01 / runs.RUN_FILE, run)
    rec = RunRecord.load(run)
    assert rec.folder == run and rec.where == str(run / runs.RUN_FILE)
    assert rec.spec == PlugSpec("plug", "zh", "en", think=False)
    assert (rec.base_model, rec.base_model_path) == ("/models/qwen2-tiny", "/models/qwen2-tiny")
    assert (rec.base_name, rec.size_label, rec.backend) == ("Qwen2-Tiny", "9.8M", "cpu")
    assert rec.load_in_4bit is False and rec.bnb_4bit is None
    assert (rec.chat_template_name, rec.eos_token) == ("chatml", "<|im_end|>")
    assert rec.turn_tokens["checks"][0]["token"] == "<|im_end|>"
    assert rec.config["preset"] == "cpu-tiny" and rec.versions["trl"] == "1.16.0"
    assert rec.data_summary["batching"]["mode"] == "rows" and rec.plug_lite_version == "0.1.0"
    m = rec.metrics
    assert (m.steps, m.first_loss, m.final_loss, m.peak_reserved_mib) == (2, 11.9524, 11.9251, None)
    assert m.device == "CPU (2 cores, x86_64)" and m.world_size == 1


def test_a_record_writes_the_file_0_1_wrote(tmp_path):
    """to_dict gives exactly the 0.1 keys, nesting and order; save writes the same bytes."""
    raw = _raw(runs.RUN_FILE)
    rec = RunRecord.from_dict(raw)
    assert rec.to_dict() == raw and list(rec.to_dict()) == list(raw)
    assert list(rec.to_dict()["metrics"]) == list(raw["metrics"])
    out = rec.save(tmp_path)
    assert out == tmp_path / runs.RUN_FILE
    assert out.read_text(encoding="utf-8") == (V01 / runs.RUN_FILE).read_text(encoding="utf-8")
    assert RunRecord.load(tmp_path) == rec


def test_a_qlora_run_keeps_its_4bit_settings():
    # train.py writes bnb_4bit as {quant_type, double_quant, compute_dtype} when load_in_4bit
    raw = {**_raw(runs.RUN_FILE), "backend": "cpu-qlora", "load_in_4bit": True,
           "bnb_4bit": {"quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"}}
    rec = RunRecord.from_dict(raw)
    assert rec.load_in_4bit is True and rec.bnb_4bit == FourBit("nf4", True, "float32")
    assert rec.to_dict() == raw and list(rec.to_dict()) == list(raw)


def test_older_and_smaller_records_still_load():
    """A record of an early 0.1 run (fewer metrics, no turn_tokens) or a hand-made one."""
    early = {"plug_lite_version": "0.1.0", "base_model": "m", "base_model_path": None, "base_name": "M",
             "size_label": None, "format": "mono", "target": "ko", "pivot": None, "think": False,
             "backend": "cpu", "load_in_4bit": False, "bnb_4bit": None, "chat_template_name": "chatml",
             "eos_token": "<|im_end|>", "config": {}, "versions": {},
             "data_summary": {"rows": 3}, "metrics": {"train_loss": 2.5, "steps": 4}}
    rec = RunRecord.from_dict(early)
    assert rec.spec == PlugSpec("mono", "ko", None) and rec.turn_tokens is None
    assert rec.metrics.train_loss == 2.5 and rec.metrics.steps == 4 and rec.metrics.tokens_per_s is None
    written = rec.to_dict()
    assert written["turn_tokens"] is None and written["metrics"]["tokens_per_s"] is None
    assert {k: v for k, v in written.items() if k != "turn_tokens"} == {**early, "metrics": written["metrics"]}
    assert RunRecord.from_dict({"format": "plug", "target": "zh"}).spec == PlugSpec("plug", "zh")


@pytest.mark.parametrize("bad, message", [
    ({"format": "plug"}, "run.json: missing field 'target'"),
    ({"target": "zh"}, "run.json: missing field 'format'"),
    ({"format": "plugg", "target": "zh"}, "run.json: field 'format' is 'plugg'; expected one of plug, mono, pivot_only"),
    ({"format": "plug", "target": "xx"}, "run.json: .*xx"),
    ({"format": "plug", "target": "zh", "metrics": [1]}, "run.json: field 'metrics' must be an object, got list"),
])
def test_a_bad_record_is_one_line_naming_file_and_field(bad, message):
    with pytest.raises(UserError, match=message) as e:
        RunRecord.from_dict(bad, "run.json")
    assert "\n" not in str(e.value)


def test_loading_for_export_checks_base_and_adapter(tmp_path):
    with pytest.raises(UserError, match="run directory not found"):
        RunRecord.load(tmp_path / "nope", adapter=True)
    run = _run_folder(tmp_path, {k: v for k, v in _raw(runs.RUN_FILE).items() if k != "base_model"})
    with pytest.raises(UserError, match="missing field 'base_model'"):
        RunRecord.load(run, adapter=True)
    (run / runs.RUN_FILE).write_text((V01 / runs.RUN_FILE).read_text())
    with pytest.raises(UserError, match="no adapter_config.json"):
        RunRecord.load(run, adapter=True)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="no adapter_model.safetensors"):
        RunRecord.load(run, adapter=True)
    weights = run / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(UserError, match="not a safetensors file, or cut short"):
        RunRecord.load(run, adapter=True)
    header = json.dumps({"base_model.model.model.layers.0.mlp.down_proj.lora_A.weight":
                         {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(20))
    with pytest.raises(UserError, match="cut short or padded: its header describes .* the file holds"):
        RunRecord.load(run, adapter=True)
    weights.write_bytes(len(header).to_bytes(8, "little") + header + bytes(24))
    assert RunRecord.load(run, adapter=True).folder == run  # (its base is not here: no fit to check)


def test_gguf_names_and_the_base_folder_come_from_the_record(tmp_path):
    rec = RunRecord.from_dict(_raw(runs.RUN_FILE))
    assert runs.gguf_name(rec, "q8_0") == "Qwen2-Tiny-9.8M-PLUG-zh-Q8_0.gguf"
    assert runs.gguf_name(rec, "F16", kind="adapter") == "Qwen2-Tiny-9.8M-PLUG-zh-LoRA-F16.gguf"
    assert runs.gguf_name(rec, "F16", kind="base") == "Qwen2-Tiny-9.8M-F16.gguf"
    mono = RunRecord(PlugSpec("mono", "ko"), base_model="/x/Qwen2.5 0.5B/")
    assert runs.gguf_name(mono, "Q4_K_M") == "Qwen2.5-0.5B-Mono-ko-Q4_K_M.gguf"
    with pytest.raises(UserError, match=r"plug_run.json: base model '/models/qwen2-tiny' not found"):
        runs.resolve_base(rec)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    from dataclasses import replace

    assert runs.resolve_base(replace(rec, base_model_path=None, base_model=str(base))) == base


# --------------------------------------------------------------------------------------------
# export_report.json


def test_an_export_report_of_0_1_loads_and_writes_back(tmp_path):
    raw = _raw(runs.EXPORT_REPORT)
    run = _run_folder(tmp_path, report=raw)
    rep = ExportRecord.load(run)
    assert rep.folder == run and rep.run_dir == Path("/work/runs/plug-zh") and rep.merge == "plain"
    assert list(rep.files) == ["F16", "Q8_0"]
    q8 = rep.files["Q8_0"]
    assert q8.path == Path("/work/gguf/Qwen2-Tiny-9.8M-PLUG-zh-Q8_0.gguf") and q8.bytes == 16342688
    assert q8.note.startswith("8.5 bits/weight")
    assert rep.adapter_gguf == Path("/work/gguf/Qwen2-Tiny-9.8M-PLUG-zh-LoRA-F16.gguf") and rep.base_gguf is None
    assert rep.adapter_not_written is None and rep.timings["verify_s"] == 30.2
    v = rep.verify
    assert v.passed and v.checks["eos_id"] == 151645
    assert v.greedy["F16"].identical_to_merged == 1 and v.greedy["F16"].agreement_with_base == 1.0
    assert v.stops["merged"].tokens == [16] and v.stops["Q8_0"].stopped == 0
    assert len(v.warnings) == 3 and v.fine_tune_visible_on.startswith("0/1 prompts")
    assert rep.to_dict() == raw and list(rep.to_dict()) == list(raw)
    assert list(rep.to_dict()["verify"]) == list(raw["verify"])
    assert rep.save(tmp_path).read_text(encoding="utf-8") == (V01 / runs.EXPORT_REPORT).read_text(encoding="utf-8")


def test_export_id_is_kept_and_checked(tmp_path):
    raw = {**_raw(runs.EXPORT_REPORT), "export_id": "0123abcd0123abcd"}
    rep = ExportRecord.from_dict(raw)
    assert rep.export_id == "0123abcd0123abcd" and rep.to_dict() == raw
    assert "export_id" not in ExportRecord.from_dict(_raw(runs.EXPORT_REPORT)).to_dict()  # 0.1's keys only
    with pytest.raises(UserError, match="field 'export_id' must be a string"):
        ExportRecord.from_dict({**raw, "export_id": 7})


def test_export_report_variants_the_writer_makes():
    raw = _raw(runs.EXPORT_REPORT)
    # a QLoRA run with a base GGUF and a quantized file that drifted: export.verify adds
    # closer_to_base_on after a file's text and adapter_note before merged_text
    v = dict(raw["verify"])
    merged_text = v.pop("merged_text")
    v["greedy"] = {**v["greedy"], "Q8_0": {**v["greedy"]["Q8_0"], "closer_to_base_on": 1}}
    v["adapter_note"] = "QLoRA run: ..."
    v["merged_text"] = merged_text
    qlora = {**raw, "merge": "nf4", "base_gguf": "/work/gguf/Qwen2-Tiny-9.8M-F16.gguf", "verify": v}
    rep = ExportRecord.from_dict(qlora)
    assert rep.verify.greedy["Q8_0"].closer_to_base_on == 1 and rep.verify.greedy["F16"].closer_to_base_on is None
    assert rep.verify.adapter_note == "QLoRA run: ..." and rep.base_gguf.name == "Qwen2-Tiny-9.8M-F16.gguf"
    assert rep.to_dict() == qlora and list(rep.to_dict()["verify"]) == list(v)
    # a failed parity check: only the error is written; no verify at all with --no-verify
    failed = {**raw, "verify": {"error": "F16: metadata plug.target is None, expected 'zh'"}}
    rep = ExportRecord.from_dict(failed)
    assert not rep.verify.passed and rep.verify.error.startswith("F16: metadata") and rep.to_dict() == failed
    unchecked = {k: x for k, x in raw.items() if k != "verify"}
    assert ExportRecord.from_dict(unchecked).verify is None and ExportRecord.from_dict(unchecked).to_dict() == unchecked


def test_a_done_export_and_its_files(tmp_path):
    gguf = tmp_path / "gguf"
    gguf.mkdir()
    raw = json.loads((V01 / runs.EXPORT_REPORT).read_text().replace("/work/gguf", str(gguf)))
    run = _run_folder(tmp_path, report=raw)
    assert runs.export_report(run) is None  # its files do not exist
    for f in raw["files"].values():
        Path(f["path"]).write_bytes(b"GGUF")
    rep = runs.export_report(run)
    assert rep == ExportRecord.from_dict(raw) and runs.export_report(run, "q8_0") == rep
    assert runs.export_report(run, "Q4_K_M") is None
    assert runs.exported_gguf(run) == gguf / "Qwen2-Tiny-9.8M-PLUG-zh-Q8_0.gguf"  # the smallest
    assert runs.exported_gguf(run, "f16") == gguf / "Qwen2-Tiny-9.8M-PLUG-zh-F16.gguf"
    with pytest.raises(UserError, match=r"no Q4_K_M file exported \(have F16, Q8_0\)"):
        runs.exported_gguf(run, "Q4_K_M")
    (run / runs.EXPORT_REPORT).write_text(json.dumps({**raw, "verify": {"error": "parity"}}))
    assert runs.export_report(run) is None  # a failed parity check is not an export
    with pytest.raises(UserError, match="not exported yet"):
        runs.exported_gguf(run)
    (run / runs.EXPORT_REPORT).write_text("{not json")
    assert runs.export_report(run) is None
    with pytest.raises(UserError, match=r"export_report.json:1: bad JSON"):
        runs.read_export_report(run)
    (run / runs.EXPORT_REPORT).write_text(json.dumps({"files": {"Q8_0": {"bytes": 3}}}))
    with pytest.raises(UserError, match="field 'files' must map a quant type"):
        runs.read_export_report(run)


# --------------------------------------------------------------------------------------------
# The work folder


def test_one_naming_rule_and_the_work_folder(tmp_path):
    assert runs.run_name("plug", "zh") == "plug-zh"
    assert runs.run_name("mono", "ko", model="Qwen2.5 0.5B/x") == "Qwen2.5-0.5B-x-mono-ko"
    work = runs.WorkFolder(tmp_path)
    assert work.run_dir("plug", "zh") == tmp_path / "runs" / "plug-zh"
    assert work.data_file("mono", "ko") == tmp_path / "data" / "train.mono.ko.jsonl"
    assert work.answers_file("zh", "alpacaeval", "plug") == tmp_path / "eval" / "zh" / "alpacaeval.plug.jsonl"
    assert work.judge_dir("zh", "alpacaeval") == tmp_path / "eval" / "zh" / "judge-alpacaeval"
    assert work.report_dir("zh") == tmp_path / "eval" / "zh" / "report" and work.gguf_dir == tmp_path / "gguf"
    run = work.run_dir("plug", "zh")
    assert not runs.is_finished(run) and runs.export_report(run) is None
    with pytest.raises(UserError, match="not found"):
        RunRecord.load(run)
    run.mkdir(parents=True)
    (run / runs.RUN_FILE).write_text(json.dumps({"format": "plug", "target": "zh"}))
    assert runs.is_finished(run) and RunRecord.load(run).spec == PlugSpec("plug", "zh")
    gguf = tmp_path / "gguf" / "m-Q8_0.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    report = {"files": {"Q8_0": {"path": str(gguf), "bytes": 4}}, "verify": {"greedy": {}}}
    (run / runs.EXPORT_REPORT).write_text(json.dumps(report))
    assert runs.export_report(run) == ExportRecord.from_dict(report) and runs.export_report(run, "q8_0") is not None
    assert runs.export_report(run, "Q4_K_M") is None and runs.exported_gguf(run) == gguf
    with pytest.raises(UserError, match="no Q4_K_M file exported"):
        runs.exported_gguf(run, "Q4_K_M")
