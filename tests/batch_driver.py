"""A process that sends N calls through the Batch API runner (tests kill it with SIGKILL).

    python tests/batch_driver.py BASE_URL CACHE N [--wait]

The calls are those of :func:`calls` (also used by the test to check the cache afterwards).
"""

from __future__ import annotations

import sys
from pathlib import Path

from plug_lite import llm, llm_batch


def calls(cfg: llm.LLMSettings, n: int) -> list[llm_batch.Call]:
    out = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"question {i}"}]
        out.append(llm_batch.Call(llm.cache_key(task="driver", model=cfg.model, messages=msgs), cfg.body(msgs),
                                  {"job": "driver", "id": str(i)}))
    return out


def main(argv: list[str]) -> int:
    url, cache_path, n = argv[0], Path(argv[1]), int(argv[2])
    cfg = llm.settings("batch-model", url, "driver-key", max_retries=0)
    cache = llm.CallCache(cache_path)
    opts = llm_batch.BatchOptions(batch=True, batch_wait="--wait" in argv, batch_poll=0.01)
    d = llm_batch.dispatch(calls(cfg, n), cache, opts, cfg=cfg, ledger=llm_batch.ledger_path(cache_path), job="driver")
    cache.close()
    print(f"by_batch={d.by_batch} failed={len(d.failed)} pending={len(d.pending)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
