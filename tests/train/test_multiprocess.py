"""plug_lite.train in two processes on the CPU (gloo): `torchrun --nproc_per_node 2 -m plug_lite.train`
and the `accelerate launch --multi_gpu --num_processes 2` form the README gives. Both ranks train
(the data is split between them), one run folder is written by rank 0, and export works on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train_rows import REPO

ROWS = 8  # two steps of 2 rows per process x 2 processes = one epoch (eight_rows_file)


def _launch(launcher: list[str], model: Path, rows: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [*launcher, "-m", "plug_lite.train", "--model", str(model), "--data", str(rows), "--output-dir", str(out),
           "--preset", "cpu-tiny", "--max-steps", "2", "--preview-rows", "0", *extra]
    return subprocess.run(cmd, cwd=str(out.parent), env=env, capture_output=True, text=True, timeout=600)


def _check_run(p: subprocess.CompletedProcess, run: Path, steps_per_epoch: int | None = 2) -> dict:
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((run / "plug_run.json").read_text())
    assert rec["metrics"]["world_size"] == 2 and rec["data_summary"]["batching"]["processes"] == 2
    assert rec["metrics"]["steps"] == 2
    if steps_per_epoch is None:  # micro-batches by tokens: the processes share them
        steps_per_epoch = rec["data_summary"]["batching"]["micro_batches"] // 2
    # both ranks trained: each process makes half of an epoch's micro-batches (2 rows each by default:
    # 2 steps of 2 rows per process cover all 8 rows once; one process would need 4 steps)
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [1, 2] and lines[-1]["epoch"] == pytest.approx(2 / steps_per_epoch)
    assert (p.stdout + p.stderr).count("done: ") == 1  # rank 0 alone finished the run folder
    assert sorted(x.name for x in run.iterdir()) == ["adapter", "checkpoints", "config.yaml", "metrics.jsonl",
                                                      "plug_run.json", "tokenizer"]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not [x for x in run.parent.iterdir() if x.name.startswith(".")]  # no staging folder left behind
    return rec


def test_torchrun_two_processes_then_export(tiny_model, eight_rows_file, tmp_path):
    from plug_lite import export

    run = tmp_path / "run"
    p = _launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tiny_model, eight_rows_file, run)
    rec = _check_run(p, run)
    assert rec["metrics"]["tokens"] > rec["metrics"]["trained_tokens"] > 0
    report = export.main(run, out_dir=tmp_path / "gguf", quants=["F16"], n_prompts=1, max_new_tokens=8, stop_budget=8)
    assert report.files["F16"].path.is_file() and report.verify.checks["prompt_tokens"] == "ok"


def test_accelerate_launch_two_processes(tiny_model, eight_rows_file, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip("accelerate's launcher is not installed next to this python")
    run = tmp_path / "run"
    p = _launch([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                 "--mixed_precision", "no", "--dynamo_backend", "no"], tiny_model, eight_rows_file, run)
    _check_run(p, run)


def test_torchrun_two_processes_share_micro_batches_by_tokens(tiny_model, eight_rows_file, tmp_path):
    run = tmp_path / "run"
    p = _launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tiny_model, eight_rows_file, run,
                "--no-packing", "--group-by-tokens", "--batch-size", "2", "--max-length", "256")
    rec = _check_run(p, run, steps_per_epoch=None)
    layout = rec["data_summary"]["batching"]
    assert layout["mode"] == "tokens" and layout["micro_batches"] % 2 == 0 and layout["micro_batches"] < ROWS
