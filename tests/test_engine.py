"""plug_lite.engine's greedy decoding (export's parity and stops checks use it) on the tiny model
trained to answer in the PLUG format and end its turn (tests/plug_gguf.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import plug_gguf  # noqa: E402

from plug_lite.engine import LlamaEngine  # noqa: E402
from plug_lite.spec import PlugSpec  # noqa: E402


def test_greedy_records_the_end_token(tiny_model):
    """An answer that ends its turn says which end-of-generation token ended it, also when that
    token is not in ``stop``; one cut by ``max_new`` has none."""
    model = plug_gguf.build(tiny_model)["plug"]
    eng = LlamaEngine(model, ctx=512, threads=1)
    try:
        q = plug_gguf.CONVERSATIONS[0][0]
        ids, _ = eng.tokenize([{"role": "system", "content": PlugSpec("plug", "zh").system_prompt()},
                               {"role": "user", "content": q}])
        eos = eng.llm.token_eos()
        whole = eng.greedy(ids, 200, {eos})
        assert whole.stopped and whole.end == "<|im_end|>"
        unasked = eng.greedy(ids, 200, set())  # llama.cpp's end-of-generation flag stops it too
        assert list(unasked) == list(whole) and unasked.end == "<|im_end|>"
        cut = eng.greedy(ids, 3, {eos})
        assert not cut.stopped and cut.end is None and len(cut) == 3
    finally:
        eng.close()
