"""Training rows for the tests of plug_lite.train (not a test module): PLUG rows made with
formats.render_plug + spec.system_prompt, and the file that holds them."""

from __future__ import annotations

import json
from pathlib import Path

from plug_lite import formats, spec

REPO = Path(__file__).resolve().parents[2]

QUESTIONS = [
    ("天空为什么是蓝色的？", "Why is the sky blue?", "Sunlight scatters off air molecules; blue scatters most.", "阳光被空气分子散射，蓝光散射得最多。"),
    ("猫为什么会打呼噜？", "Why do cats purr?", "Cats purr to signal comfort and to calm themselves.", "猫打呼噜是为了表示舒适和安抚自己。"),
    ("怎样煮米饭？", "How do I cook rice?", "Rinse the rice, add water, boil, then simmer covered.", "先淘米，加水，煮开后盖上锅盖小火焖。"),
    ("月亮为什么有圆缺？", "Why does the moon have phases?", "We see different parts of its sunlit half as it orbits.", "月亮绕地球转动，我们看到它被照亮部分的不同角度。"),
]


def plug_row(i: int, q: str, pi: str, pr: str, t: str, *, target: str = "zh") -> dict:
    return {
        "id": f"r{i}",
        "prompt": [
            {"role": "system", "content": spec.system_prompt("plug", target)},
            {"role": "user", "content": q},
        ],
        "completion": [{"role": "assistant", "content": formats.render_plug(pi, pr, t, target=target)}],
        "format": "plug",
        "target": target,
        "pivot": "en",
    }


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
