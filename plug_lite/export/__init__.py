"""``plug-lite export RUN_DIR``: merge the LoRA, convert to GGUF, quantize, check parity.

The runbook of an export: ``plug-lite export RUN_DIR`` (also ``python -m plug_lite.export``,
``python -m plug_lite export`` and :func:`main`) takes a finished training run folder
(``plug_run.json``, ``adapter/``, ``tokenizer/``) through these steps, one file each:

1. **Merge** (:mod:`.merging`): the adapter into a copy of the base model on the CPU, in float32
   when that fits in RAM, saved in the base's dtype as ``RUN_DIR/merged/``. For a QLoRA run the
   base Linear weights first take the NF4 round trip the adapter was trained against
   (``--plain-merge`` turns that off); nothing is ever merged into 4-bit weights. Reused when the
   adapter has not changed.
2. **Convert** (:mod:`.converting`): the merged folder with llama.cpp's converter to F16 (or
   ``--outtype`` BF16 / Q8_0), with the inference chat template and the PLUG keys (``plug.format``,
   ``plug.target``, ``plug.pivot``, ``plug.think``) written in, so ``plug-lite chat`` needs no
   flags; each ``--quant`` type made from that file; the adapter GGUF (a few MB, for
   ``Llama(base.gguf, lora_path=...)``; none for a run that trained turn-token rows) and, with
   ``--with-base``, the base's F16 GGUF. Everything goes into a hidden staging folder in ``OUT_DIR``.
3. **Verify** (:mod:`.verifying`, on by default; ``--no-verify`` skips it), four checks:

   a. :mod:`.check_metadata`: template, BOS/EOS and PLUG keys in every file;
   b. :mod:`.check_tokens`: a rendered PLUG prompt has the same token ids in transformers and llama.cpp;
   c. :mod:`.check_greedy`: greedy text of the merged model against the F16 file, and of every
      quantized file against both the merged model and the base (a small fine-tune can be rounded
      away by quantization; see NOTES);
   d. :mod:`.check_stops`: how many answers to three held-out instructions end their turn within
      ``--stop-budget`` tokens, for the merged model and every GGUF; a model that does not stop
      gets a loud warning.

   The held-out prompts and the end-of-turn token the checks share are :mod:`.prompts`'.
4. **Keep or drop** (:mod:`.staging`): the staged files move under their final names only when the
   check passed; a failed export keeps no file.
5. **Record** (:mod:`.record`): ``RUN_DIR/export_report.json`` (a :class:`plug_lite.runs.ExportRecord`) and the printed summary.

Where a new step goes: an importance matrix is collected from the F16 file and passed to the
quantizer (:mod:`.converting`; today it is not computed: llama-cpp-python can *pass* an imatrix but
has no API to *collect* one, which needs llama.cpp's ``llama-imatrix`` binary); a further check
(say, a per-language drift report) is a ``check_*`` file that :func:`verify` calls on the answers
it already made; the chat template written into every GGUF is chosen by
:func:`.converting.inference_template`.

File names follow the ggml convention: ``<Base>-<Size>-PLUG-<lang>-<QUANT>.gguf`` (``Mono`` /
``PivotOnly`` for the other formats, ``...-LoRA-F16.gguf`` for the adapter).
"""

from __future__ import annotations

from .converting import adapter_refusal  # noqa: F401  (importable from here, as before the split)
from .merging import merge, nf4_round_trip  # noqa: F401
from .staging import cli, main
from .verifying import verify

__all__ = ["merge", "verify", "main", "cli"]
