"""``plug-lite train``: LoRA / QLoRA supervised fine-tuning on PLUG rows with TRL (Unsloth when present).

Input: a JSONL of TRL prompt-completion rows (``plug-lite data`` writes them), or ``--data
sample``: rows built from the shipped sample for ``--target`` / ``--format``.

Run it::

    plug-lite train --data rows.jsonl --model Qwen/Qwen2.5-0.5B-Instruct --preset t4
    plug-lite train --config configs/cpu-demo.yaml --max-steps 10      # flags override the file
    python -m plug_lite.train --help                                    # every TrainConfig field

From Python: ``from plug_lite.train import TrainConfig, train; run_dir = train(TrainConfig(...))``.
Multi-GPU (data parallel) is accelerate's job, not ours::

    accelerate launch -m plug_lite.train --config configs/t4-qlora.yaml

The steps, one file each, in the order :func:`prepare` takes them (read them top to bottom):

1. ``config.py``      :class:`TrainConfig` defaults < ``--config FILE.yaml`` < flags; then the preset
                      (``t4``, ``ampere``, ``cpu-demo``, ``cpu-tiny``) fills every field left unset.
2. ``rows.py``        the prompt-completion rows, checked; the run's :class:`~plug_lite.spec.PlugSpec`.
3. ``model.py``       the backend (``unsloth``, ``qlora``, ``cpu``, ``cpu-qlora``), chosen and printed
                      with the reason; the base model loaded for it; later the LoRA adapter.
4. ``template.py``    the chat template (the model's own, else ``--chat-template``) and the
                      end-of-turn token it writes after an assistant turn: the EOS the model learns.
5. ``turn_tokens.py`` the template's turn tokens whose embedding rows the base never trained
                      (``<end_of_turn>`` of a base Gemma): trained too, at the cost of k rows.
6. ``trainer.py``     TRL's SFTTrainer with this run's SFTConfig, counting the tokens it trains and
                      logging loss, tokens/s and peak memory to ``metrics.jsonl``.
7. ``mask.py``        the completion-only loss mask, checked on the trainer's own tokenized rows
                      (preview printed); rows cut to ``max_length``.
8. ``batching.py``    rows into micro-batches: packed padding-free sequences, a token budget, or
                      ``batch_size`` rows (decided on the model before step 6, applied after step 7).
9. ``run.py``         :func:`prepare` (steps 1-8), then :func:`train`: train with checkpoints every
                      ``save_steps`` (``--resume`` continues from the last one) and write the run
                      folder: ``adapter/``, ``tokenizer/``, ``config.yaml``, ``metrics.jsonl``,
                      ``checkpoints/`` and ``plug_run.json`` last (``plug-lite export`` reads it).

Facts this package relies on (measured, see the project notes): TRL 1.16 completion-only loss by
default for prompt-completion rows; ``Gemma3ForCausalLM.base_model_prefix`` must be ``"model"``
for TRL with transformers 4.57; bitsandbytes 4-bit trains on CPU with fp32 compute. Importing the
package needs only the standard library; each step imports torch, transformers, TRL and PEFT
inside the functions that use them.
"""

from .config import BACKENDS, PRESETS, TrainConfig, build_parser, load_config, resolve
from .model import choose_backend, resolve_model
from .rows import load_rows
from .run import Prepared, cli, fit, main, prepare, train

__all__ = ["TrainConfig", "PRESETS", "BACKENDS", "Prepared", "prepare", "fit", "train", "main", "cli", "load_config",
           "choose_backend", "build_parser", "resolve", "resolve_model", "load_rows"]
