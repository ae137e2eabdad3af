#!/usr/bin/env bash
# Install the Smart Turn v3.2 end-of-turn model (BSD-2, int8 ONNX, ~8.7 MB) into the venv given as $1.
#
# Why this way: the model ships inside the pipecat-ai wheel, but Parley must not install or import another
# voice framework. The wheel is downloaded without its dependencies, the .onnx file and pipecat's licence are
# copied to $VENV/share/parley/smart-turn/ (where parley/services/turn/smart_turn.py looks), and the wheel is
# thrown away. The file's SHA-256 is pinned: another file under the same name fails the install.
set -euo pipefail
venv=${1:?usage: install-smart-turn.sh VENV}
version=1.14.0
member=pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx
sha256=2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f
dest="$venv/share/parley/smart-turn"
if [ -f "$dest/smart-turn-v3.2-cpu.onnx" ] && echo "$sha256  $dest/smart-turn-v3.2-cpu.onnx" | sha256sum -c --status; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$venv/bin/pip" download -q --no-deps "pipecat-ai==$version" -d "$tmp"
"$venv/bin/python" - "$tmp"/pipecat_ai-"$version"-*.whl "$member" "$tmp/out" <<'PY'
import sys, zipfile
from pathlib import Path

wheel, member, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
out.mkdir(parents=True)
with zipfile.ZipFile(wheel) as z:
    (out / "smart-turn-v3.2-cpu.onnx").write_bytes(z.read(member))
    licence = next(n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE"))
    (out / "LICENSE").write_bytes(z.read(licence))
PY
echo "$sha256  $tmp/out/smart-turn-v3.2-cpu.onnx" | sha256sum -c --status || {
  echo "smart-turn-v3.2-cpu.onnx from pipecat-ai $version does not match the pinned SHA-256 $sha256" >&2
  exit 1
}
cat > "$tmp/out/NOTICE" <<NOTE
smart-turn-v3.2-cpu.onnx: Smart Turn v3.2 by Daily (https://github.com/pipecat-ai/smart-turn),
BSD 2-Clause licence (LICENSE, beside this file), taken from the pipecat-ai $version wheel on PyPI
($member), SHA-256 $sha256.
NOTE
mkdir -p "$(dirname "$dest")"
rm -rf "$dest" && mv "$tmp/out" "$dest"
