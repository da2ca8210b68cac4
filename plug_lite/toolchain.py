"""llama.cpp's Python tools, taken from the llama-cpp-python source distribution.

The installed llama-cpp-python wheel has the runtime but not ``convert_hf_to_gguf.py``. The sdist
of the *same version* has it, with its ``conversion/`` package, its own ``gguf-py`` and the
vocabulary-only GGUF files, all at the llama.cpp commit the runtime was built from. This module
downloads that sdist once with pip (or uses ``PLUG_LITE_SDIST`` / the cache), extracts the few
folders it needs into the cache, and hands out paths. No git clone, no compiler, no code copied
into this repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from .io import UserError

__all__ = ["cache_dir", "llama_cpp_version", "sdist_path", "source_dir", "script", "vocab_gguf", "gguf_py_dir"]

# What we extract from vendor/llama.cpp/ of the sdist.
_WANTED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "models/ggml-vocab-")


def cache_dir() -> Path:
    """``$PLUG_LITE_CACHE`` or ``~/.cache/plug_lite``."""
    return Path(os.environ.get("PLUG_LITE_CACHE") or Path.home() / ".cache" / "plug_lite")


def llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        raise UserError(
            "llama-cpp-python is not installed: pip install 'plug-lite[gguf]' "
            "(build it with CMAKE_ARGS=-DGGML_NATIVE=OFF on CPUs with AMX)"
        ) from None


def sdist_path(version: str | None = None, *, download: bool = True) -> Path:
    """The sdist of llama-cpp-python ``version`` (default: the installed one)."""
    version = version or llama_cpp_version()
    name = f"llama_cpp_python-{version}.tar.gz"
    env = os.environ.get("PLUG_LITE_SDIST")
    if env and Path(env).name == name and Path(env).is_file():
        return Path(env)
    target = cache_dir() / "sdist" / name
    if target.is_file():
        return target
    if not download:
        raise UserError(f"{target}: llama-cpp-python {version} source distribution not in the cache")
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"fetching llama.cpp's converter: pip download llama-cpp-python=={version} (sdist, ~76 MB, once)", file=sys.stderr)
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", str(target.parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not target.is_file():
        raise UserError(
            f"cannot fetch llama.cpp's converter (pip download llama-cpp-python=={version} --no-binary :all: "
            f"failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']}); "
            f"offline? put {name} at {target} or point PLUG_LITE_SDIST at it"
        )
    return target


def source_dir(version: str | None = None) -> Path:
    """``vendor/llama.cpp`` of the sdist, extracted (once) into the cache."""
    version = version or llama_cpp_version()
    dest = cache_dir() / f"llama.cpp-{version}"
    if (dest / ".complete").exists():
        return dest
    archive = sdist_path(version)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    with tarfile.open(archive, "r:gz") as tar:
        members = []
        for m in tar.getmembers():
            if not m.name.startswith(prefix):
                continue
            rel = m.name[len(prefix):]
            if rel.startswith(_WANTED) and (m.isfile() or m.isdir()):
                m.name = rel
                members.append(m)
        if not members:
            raise UserError(f"{archive}: no vendor/llama.cpp converter inside; is it the llama-cpp-python sdist?")
        tar.extractall(tmp, members=members, filter="data")
    (tmp / ".complete").write_text(version)
    if dest.exists():  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, dest)
    return dest


def script(name: str = "convert_hf_to_gguf.py") -> Path:
    """Path of one of llama.cpp's scripts (run it from inside :func:`source_dir`)."""
    path = source_dir() / name
    if not path.is_file():
        raise UserError(f"{path}: not found in the llama.cpp sources")
    return path


def vocab_gguf(name: str = "ggml-vocab-qwen2.gguf") -> Path:
    """A vocabulary-only GGUF shipped with llama.cpp (a real tokenizer with no weights)."""
    path = source_dir() / "models" / name
    if not path.is_file():
        raise UserError(f"{path}: vocabulary file not found in the llama.cpp sources")
    return path


def gguf_py_dir() -> Path:
    """llama.cpp's own gguf-py at the runtime's commit (newer than PyPI's ``gguf``)."""
    return source_dir() / "gguf-py"
