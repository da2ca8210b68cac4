"""llama.cpp from the llama-cpp-python source distribution: its Python scripts and its programs.

The installed llama-cpp-python wheel has the runtime but not ``convert_hf_to_gguf.py``. The sdist
of the *same version* has it, with its ``conversion/`` package, its own ``gguf-py`` and the
vocabulary-only GGUF files, all at the llama.cpp commit the runtime was built from. This module
downloads that sdist once with pip (or uses ``PLUG_LITE_SDIST`` / the cache), extracts the few
folders it needs into the cache, and hands out paths. No git clone, no code copied into this
repository.

**llama.cpp's programs** (:data:`TOOLS`): ``llama-quantize`` and ``llama-imatrix`` (quantize with
an importance matrix, and collect one: llama-cpp-python can do neither), ``llama-perplexity`` and
``llama-server``. :func:`build_tools` compiles them with CMake from the same sdist (same commit as
the wheel, portable ``-DGGML_NATIVE=OFF``) into ``<cache>/tools/llama-<version>-<flags>/`` (each
program with the shared libraries it needs; ``build.json`` says how it was made), so a reused
machine never compiles twice. When the wheel itself is compiled here (``make``), the same CMake
build tree serves both: the wheel's build leaves its tree (scikit-build-core's ``build-dir``) and
:func:`build_tools` configures it again with the tools switched on, so ggml and libllama are
compiled once. :func:`find_tool` finds a program: ``PLUG_LITE_LLAMA_TOOLS`` (a folder) first, then
the cache, for the installed llama-cpp-python version only.

``python -m plug_lite.toolchain build-tools`` builds them (the Makefile's ``tools`` target);
``python -m plug_lite.toolchain source`` extracts the whole sdist and prints its folder.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from .io import UserError, check_disk_space

__all__ = ["cache_dir", "llama_cpp_version", "sdist_path", "source_dir", "script", "vocab_gguf", "gguf_py_dir",
           "TOOLS", "PORTABLE_CMAKE", "flags_key", "tools_dir", "sdist_tree", "find_tool", "tools_status",
           "build_tools", "run_tool"]

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


# --------------------------------------------------------------------------------------------
# llama.cpp's programs, compiled from the same sdist

#: The programs :func:`build_tools` compiles.
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity", "llama-server")
#: The wheel's CMake flags (``make`` and the notebooks): the native build enables AMX on some CPUs
#: and quantized models then segfault (see NOTES); the portable build is as fast.
PORTABLE_CMAKE = "-DGGML_NATIVE=OFF"
#: A folder holding the programs (built elsewhere); when set, the only place looked in.
TOOLS_ENV = "PLUG_LITE_LLAMA_TOOLS"
#: Added to the wheel's flags for the programs. The tools folder defines the mtmd library itself,
#: so llama-cpp-python's own copy of it (LLAVA_BUILD) is switched off; the server is built without
#: its web UI (no download at build time); RPATHs are relative so the folder can be copied.
_TOOL_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON",
               "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DCMAKE_BUILD_RPATH_USE_ORIGIN=ON")
_BUILD_RECORD = "build.json"


def flags_key(cmake_args: str) -> str:
    """The part of a cache folder's name that stands for the CMake flags (``nonative`` for the
    portable build the Makefile makes)."""
    norm = " ".join(shlex.split(cmake_args or ""))
    if norm == PORTABLE_CMAKE:
        return "nonative"
    if not norm:
        return "default"
    import hashlib

    return "cmake-" + hashlib.sha1(norm.encode()).hexdigest()[:10]


def tools_dir(version: str | None = None, cmake_args: str = PORTABLE_CMAKE) -> Path:
    """``<cache>/tools/llama-<version>-<flags>``: where :func:`build_tools` puts the programs."""
    return cache_dir() / "tools" / f"llama-{version or llama_cpp_version()}-{flags_key(cmake_args)}"


def sdist_tree(version: str | None = None) -> Path:
    """The whole sdist extracted once into ``<cache>/src/`` (its top folder: the CMake project
    that builds the wheel, with ``vendor/llama.cpp``)."""
    version = version or llama_cpp_version()
    dest = cache_dir() / "src" / f"llama_cpp_python-{version}"
    if (dest / ".complete").exists():
        return dest
    archive = sdist_path(version)
    tmp = dest.parent / f".{dest.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        inner = tmp / f"llama_cpp_python-{version}"
        if not (inner / "CMakeLists.txt").is_file() or not (inner / "vendor" / "llama.cpp" / "tools").is_dir():
            raise UserError(f"{archive}: no CMakeLists.txt and vendor/llama.cpp/tools inside; is it the llama-cpp-python sdist?")
        (inner / ".complete").write_text(version)
        if dest.exists() and not (dest / ".complete").exists():
            shutil.rmtree(dest)  # left half-made by an interrupted extraction
        if not dest.exists():  # else another process won the race
            os.replace(inner, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _build_record(folder: Path) -> dict | None:
    """The folder's ``build.json`` when every program is there, else None."""
    try:
        record = json.loads((folder / _BUILD_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if all((folder / t).is_file() for t in TOOLS) else None


def _tool_dirs() -> list[Path]:
    env = os.environ.get(TOOLS_ENV)
    if env:
        return [Path(env)]
    try:
        version = llama_cpp_version()
    except UserError:
        return []
    root = cache_dir() / "tools"
    first = root / f"llama-{version}-{flags_key(PORTABLE_CMAKE)}"
    others = sorted(p for p in root.glob(f"llama-{version}-*") if p.is_dir() and p != first)
    return [first, *others]


def find_tool(name: str) -> Path | None:
    """The program ``name`` (one of :data:`TOOLS`): in ``$PLUG_LITE_LLAMA_TOOLS`` when that is set,
    else in a cache folder built for the installed llama-cpp-python version; None when absent."""
    if name not in TOOLS:
        raise ValueError(f"unknown llama.cpp program {name!r}; expected one of {', '.join(TOOLS)}")
    for folder in _tool_dirs():
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK) and (os.environ.get(TOOLS_ENV) or _build_record(folder) is not None):
            return path
    return None


def tools_status() -> dict:
    """Which programs are found (``{"found": {name: path or None}, "missing": [...], "hint": ...}``)."""
    found = {t: (str(p) if (p := find_tool(t)) else None) for t in TOOLS}
    missing = [t for t, p in found.items() if p is None]
    where = f"${TOOLS_ENV}" if os.environ.get(TOOLS_ENV) else "the cache"
    hint = (f"llama.cpp's programs are not in {where}: build them once with `make tools` or "
            "`python -m plug_lite.toolchain build-tools` (cmake and a C++ compiler; 7-11 minutes on 2 cores)") if missing else ""
    return {"found": found, "missing": missing, "hint": hint}


def _run_logged(cmd: list[str], log, *, progress: bool = False) -> None:
    """Run a build command, its output appended to ``log``; with ``progress``, print CMake's
    percentage every 10 points."""
    log.write(f"$ {shlex.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    shown, t0, last = -10, time.time(), ""
    assert proc.stdout is not None
    for line in proc.stdout:
        log.write(line)
        if line.strip():
            last = line.strip()
        if progress and line.startswith("[") and "%]" in line[:7]:
            pct = int(line[1:line.index("%")].strip() or 0)
            if pct >= shown + 10:
                shown = pct
                print(f"  {pct:3d}% after {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    rc = proc.wait()
    log.flush()
    if rc != 0:
        raise UserError(f"{cmd[0]} {cmd[1]} failed (exit {rc}): {last[:300]}; full log: {log.name}")


def build_tools(
    *,
    version: str | None = None,
    cmake_args: str = PORTABLE_CMAKE,
    tree: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    jobs: int | None = None,
    keep_tree: bool = False,
) -> Path:
    """Compile :data:`TOOLS` from the llama-cpp-python sdist of ``version`` (default: the installed
    one) with the wheel's ``cmake_args``; returns the folder holding them (done once: a complete
    folder is returned as it is).

    ``tree``: a CMake build folder; when it holds the wheel's build (``pip wheel -C build-dir=...``,
    as the Makefile does) its compiled ggml and libllama are reused and only the programs are
    compiled. It is removed afterwards unless ``keep_tree``.
    """
    version = version or llama_cpp_version()
    out = Path(out) if out else tools_dir(version, cmake_args)
    if _build_record(out) is not None:
        print(f"llama.cpp programs: reusing {out}", file=sys.stderr)
        return out
    for prog in ("cmake", "make"):
        if shutil.which(prog) is None:
            raise UserError(f"building llama.cpp's programs needs {prog} and a C++ compiler (apt-get install cmake g++)")
    if not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        raise UserError("building llama.cpp's programs needs a C++ compiler (apt-get install g++)")
    src = sdist_tree(version)
    tree = Path(tree) if tree else cache_dir() / "build" / out.name
    reused = (tree / "CMakeCache.txt").is_file()
    if not reused:
        check_disk_space(tree.parent, 1 << 30, "the llama.cpp build")
    try:
        jobs = jobs or len(os.sched_getaffinity(0))
    except AttributeError:
        jobs = jobs or os.cpu_count() or 1
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.parent / f"{out.name}.build.log"
    t0 = time.time()
    print(f"llama.cpp programs: building {', '.join(TOOLS)} from llama-cpp-python {version}'s sources "
          f"({cmake_args or 'default flags'}; {'reusing the wheel build in ' + str(tree) if reused else 'a fresh build'}; "
          f"{jobs} jobs; log {log_path})", file=sys.stderr, flush=True)
    env_gen = [] if reused else ["-G", "Unix Makefiles"]
    with open(log_path, "w", encoding="utf-8", buffering=1) as log:  # line-buffered: tail -f works
        _run_logged(["cmake", "-S", str(src), "-B", str(tree), *env_gen, *shlex.split(cmake_args or ""), *_TOOL_FLAGS], log)
        _run_logged(["cmake", "--build", str(tree), "--parallel", str(jobs), "--target", *TOOLS], log, progress=True)
    seconds = round(time.time() - t0, 1)
    stage = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        bin_dir = tree / "bin"
        for t in TOOLS:
            shutil.copy2(bin_dir / t, stage / t)
        for lib in bin_dir.glob("lib*.so*"):
            shutil.copy2(lib, stage / lib.name, follow_symlinks=False)
        record = {"llama_cpp_python": version, "cmake_args": cmake_args, "tool_flags": list(_TOOL_FLAGS),
                  "programs": list(TOOLS), "seconds": seconds, "jobs": jobs, "reused_wheel_build": reused,
                  "built": time.strftime("%Y-%m-%d %H:%M:%S")}
        (stage / _BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        proc = subprocess.run([str(stage / "llama-server"), "--version"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(f"{stage / 'llama-server'}: does not run after the build: {(proc.stderr or proc.stdout).strip()[-300:]}")
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if not keep_tree:
        shutil.rmtree(tree, ignore_errors=True)
    print(f"llama.cpp programs: built in {seconds:.0f} s -> {out}", file=sys.stderr)
    return out


def run_tool(name: str, args: list[str], *, what: str, timeout: float | None = None) -> str:
    """Run one of llama.cpp's programs; returns its output (stdout and stderr). A missing program
    or a failure is a one-line :class:`UserError` naming ``what`` and the program's last line."""
    path = find_tool(name)
    if path is None:
        raise UserError(f"{what}: {name} not found; {tools_status()['hint']}")
    try:
        proc = subprocess.run([str(path), *args], capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"{what}: {name} did not finish within {timeout:.0f} s") from None
    output = (proc.stdout or "") + (proc.stderr or "")
    if proc.returncode != 0:
        lines = [l for l in output.strip().splitlines() if l.strip()]
        errs = [l for l in lines if "error" in l.lower() or "failed" in l.lower()]
        raise UserError(f"{what}: {name} failed (exit {proc.returncode}): {(errs or lines or ['no output'])[-1].strip()[:300]}")
    return output


def _cli(argv: list[str] | None = None) -> int:
    from .cli import Parser
    from .io import run_cli

    ap = Parser(prog="python -m plug_lite.toolchain", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-tools", help=f"compile {', '.join(TOOLS)} (once)")
    b.add_argument("--version", help="llama-cpp-python version (default: the installed one)")
    b.add_argument("--cmake-args", default=PORTABLE_CMAKE, help=f"the wheel's CMake flags (default {PORTABLE_CMAKE})")
    b.add_argument("--tree", help="a CMake build folder to reuse (the wheel's build-dir)")
    b.add_argument("--out", help="where the programs go (default <cache>/tools/llama-<version>-<flags>)")
    b.add_argument("--jobs", type=int, help="parallel compile jobs (default: the usable CPUs)")
    s = sub.add_parser("source", help="extract the whole sdist into the cache and print its folder")
    s.add_argument("--version", help="llama-cpp-python version (default: the installed one)")
    sub.add_parser("status", help="which programs are found")
    a = ap.parse_args(argv)

    def body() -> int:
        if a.cmd == "build-tools":
            print(build_tools(version=a.version, cmake_args=a.cmake_args, tree=a.tree, out=a.out, jobs=a.jobs))
        elif a.cmd == "source":
            print(sdist_tree(a.version))
        else:
            print(json.dumps(tools_status(), indent=2))
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(_cli())
