"""GGUF metadata: read it, check a file is whole, and write the PLUG keys. Standard library only
at import time.

A GGUF file is: magic, version, tensor count, KV count, the KV pairs, the tensor infos (name,
shape, type, offset relative to the data section), padding to ``general.alignment``, the data.
This module reads the header sequentially (arrays of strings such as a 151,936-token vocabulary
are skipped, not decoded: gguf-py's ``GGUFReader`` takes ~25 s on one, this well under 1 s), and
adds keys by copying the KV pairs and tensor infos byte for byte, appending the new pairs and
streaming the data section unchanged (adding keys only moves the data section as a whole).

The value-type numbers are gguf-py's ``GGUFValueType`` (a test keeps them equal); the bytes per
tensor block come from gguf-py's ``GGML_QUANT_SIZES`` when the ``gguf`` package is installed (the
``gguf`` extra), which :func:`check` uses to tell a truncated file. Which keys make a PLUG model
is :mod:`plug_lite.spec`'s (:data:`~plug_lite.spec.PLUG_KEYS`).
"""

from __future__ import annotations

import os
import shutil
import struct
from functools import lru_cache
from pathlib import Path

from .io import UserError, atomic_path, check_disk_space, input_file
from .spec import EXPORT_KEY, PlugSpec

__all__ = ["MAGIC", "VALUE_TYPES", "read_metadata", "read_tensors", "read_spec", "check", "check_lora", "read_rows",
           "write_keys", "write_plug_metadata"]

MAGIC = b"GGUF"
#: gguf-py's GGUFValueType: name -> (number, struct format of a scalar; "" for string and array).
VALUE_TYPES = {
    "UINT8": (0, "<B"), "INT8": (1, "<b"), "UINT16": (2, "<H"), "INT16": (3, "<h"), "UINT32": (4, "<I"),
    "INT32": (5, "<i"), "FLOAT32": (6, "<f"), "BOOL": (7, "<?"), "STRING": (8, ""), "ARRAY": (9, ""),
    "UINT64": (10, "<Q"), "INT64": (11, "<q"), "FLOAT64": (12, "<d"),
}
_SCALAR = {code: fmt for code, fmt in VALUE_TYPES.values() if fmt}
_STRING, _ARRAY = VALUE_TYPES["STRING"][0], VALUE_TYPES["ARRAY"][0]
_F32, _F16 = 0, 1  # GGMLQuantizationType numbers of the two plain float tensor types
#: Errors a damaged header raises while it is read.
_DAMAGED = (ValueError, EOFError, OverflowError, MemoryError, UnicodeDecodeError)


@lru_cache(maxsize=1)
def _block_sizes() -> dict[int, tuple[int, int]]:
    """ggml type number -> (elements per block, bytes per block), from gguf-py; empty without it."""
    try:
        from gguf.constants import GGML_QUANT_SIZES
    except ImportError:
        return {}
    return {int(k): (int(v[0]), int(v[1])) for k, v in GGML_QUANT_SIZES.items()}


class _Reader:
    def __init__(self, f):
        self.f = f

    def take(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise EOFError("file ends early")
        return b

    def num(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.num("<Q")).decode("utf-8", errors="replace")

    def value(self, vtype: int, keep: bool = True):
        """A value; an array of more than 64 items is skipped (None)."""
        if vtype in _SCALAR:
            return self.num(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            sub, n = self.num("<I"), self.num("<Q")
            keep = keep and n <= 64
            if sub in _SCALAR and not keep:
                self.f.seek(n * struct.calcsize(_SCALAR[sub]), 1)
                return None
            if sub == _STRING and not keep:  # a vocabulary: walk over the strings, decode none
                end = os.fstat(self.f.fileno()).st_size
                for _ in range(n):
                    if self.f.seek(self.num("<Q"), 1) > end:
                        raise EOFError("file ends early")
                return None
            items = [self.value(sub, keep) for _ in range(n)]
            return items if keep else None
        raise ValueError(f"unknown GGUF value type {vtype}")


def _scan(f) -> dict:
    """The header of an open GGUF file: KV pairs (with their byte spans), tensor infos (name,
    dims, type, offset) and where the data section starts."""
    r = _Reader(f)
    if r.take(4) != MAGIC:
        raise ValueError("not a GGUF file (bad magic)")
    version, n_tensors, n_kv = r.num("<I"), r.num("<Q"), r.num("<Q")
    kv: dict[str, dict] = {}
    for _ in range(n_kv):
        start = f.tell()
        key = r.string()
        vtype = r.num("<I")
        kv[key] = {"type": vtype, "value": r.value(vtype), "span": (start, f.tell())}
    ti_start = f.tell()
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        dims = [r.num("<Q") for _ in range(r.num("<I"))]
        tensors.append((name, dims, r.num("<I"), r.num("<Q")))
    ti_end = f.tell()
    align = int(kv.get("general.alignment", {}).get("value") or 32)
    data_start = (ti_end + align - 1) // align * align
    return {"version": version, "n_tensors": n_tensors, "kv": kv, "ti": (ti_start, ti_end), "tensors": tensors,
            "align": align, "data_start": data_start}


def _scan_file(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: GGUF not found")
    try:
        with open(path, "rb") as f:
            return _scan(f)
    except _DAMAGED as e:
        raise UserError(f"{path}: not a readable GGUF file ({e})") from None


def read_metadata(path: str | os.PathLike) -> dict:
    """Every key/value of a GGUF file; arrays of more than 64 items (the vocabulary) are None."""
    return {k: v["value"] for k, v in _scan_file(Path(path))["kv"].items()}


def read_tensors(path: str | os.PathLike) -> list[tuple[str, list[int], int]]:
    """(name, dims with the row width first, ggml type number) of every tensor of a GGUF file."""
    return [(name, dims, ggml_type) for name, dims, ggml_type, _ in _scan_file(Path(path))["tensors"]]


def read_spec(path: str | os.PathLike, **overrides) -> PlugSpec | None:
    """The :class:`~plug_lite.spec.PlugSpec` a GGUF records (``plug.*``), with ``overrides``;
    None for a GGUF without PLUG keys (a plain chat model)."""
    return PlugSpec.from_gguf(read_metadata(path), where=Path(path).name, **overrides)


def _min_size(info: dict) -> int:
    """The smallest file size the header allows: the data start plus the furthest tensor end (a
    tensor type without a known block size counts from its offset only)."""
    sizes = _block_sizes()
    furthest = 0
    for _, dims, ggml_type, offset in info["tensors"]:
        count = 1
        for d in dims:
            count *= d
        block, nbytes = sizes.get(ggml_type, (1, 0))
        furthest = max(furthest, offset + count // block * nbytes)
    return info["data_start"] + furthest


def check(path: str | os.PathLike) -> Path:
    """``path`` as a Path; a one-line :class:`UserError` when it is missing, a folder, not a GGUF
    file or shorter than its header says."""
    p = input_file(path, "a .gguf file")
    with open(p, "rb") as f:
        head = f.read(4)
    if head != MAGIC:
        raise UserError(f"{p}: not a GGUF file (it starts with {head!r}, expected {MAGIC!r})")
    size = p.stat().st_size
    try:
        with open(p, "rb") as f:
            need = _min_size(_scan(f))
    except _DAMAGED:
        raise UserError(f"{p}: truncated or corrupt GGUF (its header cannot be read; {size} bytes)") from None
    if size < need:
        raise UserError(f"{p}: truncated GGUF: {size} bytes, its header promises {need}")
    return p


def check_lora(lora: str | os.PathLike, base: str | os.PathLike) -> Path:
    """``lora`` as a Path when it is a LoRA adapter GGUF that llama.cpp can apply to the model
    ``base``; else a one-line :class:`UserError` naming what does not fit.

    The rules are llama.cpp's own (``llama_adapter_lora_init_impl`` in ``src/llama-adapter.cpp``
    of the vendored commit): ``general.type`` is ``adapter`` and ``adapter.type`` ``lora``; the
    architecture is the base's; every tensor is half of an ``X.lora_a`` / ``X.lora_b`` pair (norm
    vectors ignored); ``X`` exists in the base; ``a`` is [in, r] and ``b`` [r, out] for a base
    tensor [in, out] (``token_embd`` has them flipped). They are checked here, before llama.cpp
    sees the file, because llama-cpp-python 0.3.36 does not notice when llama.cpp refuses an
    adapter (a NULL pointer is not ``None``) and then crashes with a segmentation fault.
    """
    lora, base = check(lora), Path(base)
    ad, model = _scan_file(lora), _scan_file(base)
    kv = lambda info, key: info["kv"].get(key, {}).get("value")  # noqa: E731
    gtype, atype = kv(ad, "general.type"), kv(ad, "adapter.type")
    if gtype != "adapter" or atype != "lora":
        what = f"general.type is {gtype!r}" if gtype != "adapter" else f"adapter.type is {atype!r}"
        raise UserError(f"{lora}: not a LoRA adapter GGUF ({what}; expected 'adapter' / 'lora'); "
                        "make one with plug-lite export or llama.cpp's convert_lora_to_gguf.py")
    arch, base_arch = kv(ad, "general.architecture"), kv(model, "general.architecture")
    if arch != base_arch:
        raise UserError(f"{lora}: adapter for architecture {arch!r}, but {base.name} is {base_arch!r}")
    pairs: dict[str, dict[str, list[int]]] = {}
    for name, dims, _, _ in ad["tensors"]:
        stem, dot, half = name.rpartition(".")
        if half in ("lora_a", "lora_b") and dot:
            pairs.setdefault(stem, {})[half[-1]] = dims
        elif not name.endswith("_norm.weight"):
            raise UserError(f"{lora}: tensor {name!r} is not part of a LoRA pair (.lora_a / .lora_b)")
    shapes = {name: dims for name, dims, _, _ in model["tensors"]}
    for stem, ab in sorted(pairs.items()):
        if set(ab) != {"a", "b"}:
            raise UserError(f"{lora}: tensor {stem!r} has only lora_{next(iter(ab))} (both halves are needed)")
        if stem not in shapes:
            raise UserError(f"{lora}: tensor {stem!r} is not in {base.name} (an adapter for another base model?)")
        (m0, m1), a, b = (shapes[stem] + [1])[:2], ab["a"] + [1], ab["b"] + [1]
        ok = (m0 == b[1] and m1 == a[1]) if stem.endswith("token_embd.weight") else \
             (m0 == a[0] and m1 == b[1] and a[1] == b[0])
        if not ok:
            raise UserError(f"{lora}: tensor {stem!r} is {a[:2]} x {b[:2]}, which does not fit {base.name}'s "
                            f"{shapes[stem]} (an adapter for another base model?)")
    if not pairs:
        raise UserError(f"{lora}: adapter holds no LoRA tensors")
    return lora


def read_rows(path: str | os.PathLike, tensor: str, rows: list[int]) -> list[list[float]]:
    """Rows of a 2-D F32 or F16 tensor of a GGUF file (e.g. ``token_embd.weight``, one row per token)."""
    path = Path(path)
    fmts = {_F32: ("<f", 4), _F16: ("<e", 2)}
    info = _scan_file(path)
    for name, dims, ggml_type, offset in info["tensors"]:
        if name != tensor:
            continue
        if ggml_type not in fmts or len(dims) != 2:
            raise UserError(f"{path}: tensor {tensor} is type {ggml_type} with {len(dims)} dims; only 2-D F32/F16 are read")
        fmt, size = fmts[ggml_type]
        width = dims[0]  # ne[0] varies fastest: a row of a [vocab, hidden] matrix is `width` values
        out = []
        with open(path, "rb") as f:
            for r in rows:
                f.seek(info["data_start"] + offset + r * width * size)
                out.append([v[0] for v in struct.iter_unpack(fmt, f.read(width * size))])
        return out
    raise UserError(f"{path}: no tensor {tensor!r}")


def _string_kv(key: str, value: str) -> bytes:
    k, v = key.encode("utf-8"), value.encode("utf-8")
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", _STRING) + struct.pack("<Q", len(v)) + v


def write_keys(src: str | os.PathLike, dst: str | os.PathLike, keys: dict[str, str]) -> Path:
    """Copy GGUF ``src`` to ``dst`` (atomically; ``dst`` may be ``src``) with the string ``keys``
    set. Every other key, tensor info and tensor byte is copied unchanged."""
    src, dst = Path(src), Path(dst)
    info = _scan_file(src)
    check_disk_space(dst.parent, src.stat().st_size, dst.name)
    kept = [v["span"] for k, v in info["kv"].items() if k not in keys]
    with open(src, "rb") as f, atomic_path(dst, suffix=".gguf") as tmp:
        with open(tmp, "wb") as out:
            out.write(MAGIC + struct.pack("<IQQ", info["version"], info["n_tensors"], len(kept) + len(keys)))
            for a, z in kept:
                f.seek(a)
                out.write(f.read(z - a))
            for k, v in keys.items():
                out.write(_string_kv(k, v))
            a, z = info["ti"]
            f.seek(a)
            out.write(f.read(z - a))
            out.write(b"\0" * (-out.tell() % info["align"]))
            f.seek(info["data_start"])
            shutil.copyfileobj(f, out, 16 << 20)
            out.flush()
            os.fsync(out.fileno())
    return dst


def write_plug_metadata(src: str | os.PathLike, dst: str | os.PathLike, spec: PlugSpec,
                        chat_template: str | None = None, export_id: str | None = None) -> Path:
    """Copy GGUF ``src`` to ``dst`` with the spec's ``plug.*`` keys and, when given,
    ``tokenizer.chat_template`` and the export's id (:data:`~plug_lite.spec.EXPORT_KEY`) set
    (see :func:`write_keys`)."""
    keys = spec.gguf_fields()
    if chat_template is not None:
        keys["tokenizer.chat_template"] = chat_template
    if export_id is not None:
        keys[EXPORT_KEY] = export_id
    return write_keys(src, dst, keys)
