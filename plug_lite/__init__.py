"""plug_lite: PLUG (Pivot Language gUided Generation; Zhang et al., ACL 2024) on one GPU.

``import plug_lite`` needs only the standard library; each verb module imports its heavy
libraries inside the functions that use them.

The map of the package: who owns which fact. Imports point down this list, never up; a verb
never imports another verb (``demo`` and ``notebook`` orchestrate verbs and may).

Ground floor (standard library only at import time)

=================  ==================================================================================
``languages``      the language registry: names and the PLUG section headers of each language
``io``             one-line user errors (exit code 2), atomic writes, resumable JSONL
``spec``           what a PLUG model is: (format, target, pivot, think) checked once, the format list,
                   the system prompts, and how the spec is written in training rows,
                   ``plug_run.json``, GGUF ``plug.*`` keys and answer records (``target`` is always
                   the target language; the answer text is ``target_response``)
``templates``      the chat templates kept for models that carry none
``formats``        render, parse and stream-parse a PLUG answer, and the record of one answer
                   (``AnswerRecord``: generate, chat and extract write it, judge and report read it)
``gguf_meta``      GGUF metadata: read it, check a file is whole, write the ``plug.*`` keys
``engine``         the llama.cpp engine every verb shares (load, chat-format, stream, greedy), its
                   options (``EngineOptions``) and log, the streaming printer, and how many CPU
                   threads to use
``runs``           the run folder and the work folder: where each file goes, one naming rule,
                   whether a run is finished / exported at a quant type, and the run folder's two
                   records (``RunRecord``: plug_run.json, ``ExportRecord``: export_report.json)
``cli``            the command line: each verb's flags made from its typed ``main(...)`` (a
                   dataclass parameter's fields are flags too)
=================  ==================================================================================

Libraries any verb may use: ``data`` (training rows; also the ``data`` command), ``extract``
(sections of model outputs; also the ``extract`` command), ``evalsets``, ``metrics`` (with
``confusion``: lines and words in the wrong language), ``agreement`` (kappa of several judges),
``prompted`` (the prompted-PLUG instruction and worked examples for untrained instruct models),
``reporting`` (the evaluation report), ``llm`` (endpoint client and call cache), ``llm_batch`` (the
same calls through batch engines: request files, result files, the Batch API), ``translation``
(one text at a time, by an LLM), ``convert``, ``toolchain`` (llama.cpp's scripts and programs from the
llama-cpp-python sdist), ``imatrix`` (importance matrices from a run's rows), ``drift`` (a quantized
file against its F16, by language), ``models``, ``gemma``,
``conversation`` (what a model is shown of a conversation: system prompt, a client's system
message, history; ``chat`` and ``serve``), ``openai_api`` (OpenAI's chat completion requests,
responses, stream chunks and errors; where a PLUG answer's pivot goes).

Verbs (``plug-lite <verb>``, ``python -m plug_lite <verb>``, ``python -m plug_lite.<verb>``):
``train``, ``export``, ``share``, ``chat``, ``serve``, ``generate``, ``judge``, ``report``, ``translate``.
``train`` is a package whose files are its steps, read top to bottom in its docstring; its
``batching`` (rows into micro-batches) and ``turn_tokens`` (the chat template's special tokens'
embedding rows) serve training alone and live inside it.
Orchestrators: ``demo`` (``make demo``) and ``notebook`` (the helpers the notebooks call).
"""

__version__ = "0.1.0"

# transformers 4.57.3+ warns of "an incorrect regex pattern" at every load of a tokenizer folder it
# saved itself; for the models plug_lite uses that is a false alarm (the reasons are in gemma.py).
from .gemma import quiet_regex_warning as _quiet_regex_warning  # noqa: E402

_quiet_regex_warning()
