#!/usr/bin/env bash
# Build .gpu/ (git-ignored): what benchmarks/gpu_check.sh needs on a lent GPU machine that has torch,
# transformers 5.x, peft and accelerate but no trl, bitsandbytes, datasets, unsloth, llama-cpp-python,
# and no network. Needs the package registry and the project's .venv (for the Qwen2 tokenizer and the
# llama.cpp converter in the plug_lite cache). Run from the repository root:  bash benchmarks/gpu_bundle.sh
#
#   .gpu/whl_common   datasets, dill, multiprocess, peft (pinned), bitsandbytes (CPU + CUDA 13.x only)
#   .gpu/whl_trl      trl as pinned in constraints.txt (the qlora runs)
#   .gpu/whl_unsloth  unsloth + unsloth_zoo (the Studio web app left out), trl 1.15.0 (unsloth's bound)
#                     and the modules they import: tyro, docstring-parser, typeguard, shtab,
#                     cut_cross_entropy, msgspec, torchao
#   .gpu/cache        plug_lite cache: the compact Qwen2 tokenizer, llama.cpp's converter (no vocab files)
# Wheels: CPython 3.12, manylinux x86_64, no dependencies. Fails over MAX_MIB (default 58) MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=.gpu
MAX_MIB=${MAX_MIB:-58}
UNSLOTH=${UNSLOTH:-2026.10.9}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf "$OUT"; mkdir -p "$OUT"/whl_common "$OUT"/whl_trl "$OUT"/whl_unsloth "$OUT"/cache

pin() { grep -i "^$1==" constraints.txt | head -1; }
dl() {  # DIR SPEC...
  local d=$1; shift
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$d" "$@"
}
dl "$OUT/whl_common" "$(pin datasets)" dill==0.4.1 multiprocess==0.70.19 "$(pin peft)" "$(pin bitsandbytes)"
dl "$OUT/whl_trl" "$(pin trl)"
dl "$OUT/whl_unsloth" "unsloth==$UNSLOTH" "unsloth_zoo==$UNSLOTH" trl==1.15.0 tyro docstring-parser typeguard shtab \
  cut_cross_entropy msgspec torchao

# slim: keep bitsandbytes' CPU and CUDA 13.x libraries, drop unsloth's Studio app; RECORD rewritten
"$PY" - "$OUT"/whl_common/bitsandbytes-*.whl "$OUT"/whl_unsloth/unsloth-[0-9]*.whl <<'EOF'
import base64, hashlib, os, re, sys, zipfile
rules = {
    "bitsandbytes": lambda n: not (m := re.match(r"bitsandbytes/libbitsandbytes_(\w+)\.(so|dll|dylib)$", n))
                              or re.fullmatch(r"cpu|cuda13\d", m[1]),
    "unsloth": lambda n: not n.startswith("studio/"),
}
for src in sys.argv[1:]:
    keep = rules[os.path.basename(src).split("-")[0]]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(src + ".tmp", "w", zipfile.ZIP_DEFLATED) as zout:
        infos = [i for i in zin.infolist() if keep(i.filename)]
        record = next(i for i in infos if i.filename.endswith(".dist-info/RECORD"))
        lines = []
        for i in infos:
            if i is record:
                continue
            data = zin.read(i)
            zout.writestr(i, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{i.filename},sha256={digest},{len(data)}")
        zout.writestr(record, "\n".join(lines + [f"{record.filename},,"]) + "\n")
        print(f"{os.path.basename(src)}: kept {len(infos)} of {len(zin.infolist())} files")
    os.replace(src + ".tmp", src)
EOF

# the plug_lite cache: Qwen2 tokenizer (tokenizer.json written compactly) and llama.cpp's converter
"$PY" - "$OUT/cache" <<'EOF'
import json, shutil, sys
from pathlib import Path
from plug_lite.models import qwen2_tokenizer_dir
from plug_lite.toolchain import source_dir
dst = Path(sys.argv[1])
tok = dst / "tokenizers" / "qwen2"
tok.mkdir(parents=True)
for f in qwen2_tokenizer_dir().iterdir():
    if f.name == "tokenizer.json":
        (tok / f.name).write_text(json.dumps(json.loads(f.read_text("utf-8")), ensure_ascii=False, separators=(",", ":")), "utf-8")
    elif f.name not in ("vocab.json", "merges.txt"):
        shutil.copy(f, tok / f.name)
src = source_dir()
conv = dst / src.name
conv.mkdir()
for name in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", ".complete"):
    shutil.copy(src / name, conv / name)
for name in ("conversion", "gguf-py"):
    shutil.copytree(src / name, conv / name, ignore=shutil.ignore_patterns("__pycache__"))
print("cache:", sorted(p.name for p in dst.rglob("*") if p.parent in (dst, tok, conv)))
EOF

du -sh "$OUT"/* | sed 's/^/  /'
TOTAL=$(du -sb "$OUT" | cut -f1)
echo "  total $((TOTAL / 1048576)) MiB, limit $MAX_MIB MiB"
[ "$TOTAL" -le $((MAX_MIB * 1048576)) ] || { echo "bundle too big" >&2; exit 1; }
