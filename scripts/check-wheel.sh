#!/usr/bin/env bash
# Check the installed-wheel path end to end: what `pip install 'parley[local,piper]'` gives someone without a checkout.
#
# Usage: scripts/check-wheel.sh [WORKDIR]   (default: a new temporary folder, removed at the end unless KEEP=1)
#
# Builds Parley's wheel, installs it into a fresh venv with the tested versions (constraints.txt) and no Makefile
# step (llama-cpp-python comes from the portable build that scripts/install-llama.sh cached, if there is one, as a
# plain build would use -march=native), then, from a folder outside the source tree and with empty caches:
# `parley serve` must start, its self-check must load every embedded model of the default agent (the LLM joined
# from its slice packages into a fresh model cache, SHA-256 checked), and `parley demo` must play its call.
# Needs the package index (minutes: ~1.5 GB of packages), so it is not part of `make test`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
[ -n "${1:-}" ] || [ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
say() { echo "check-wheel: $*" >&2; }

say "building the wheel into $work/whl"
rm -rf "$work/whl" && "$python" -m pip wheel -q --no-deps "$root" -w "$work/whl"
wheel=$(ls "$work"/whl/parley-*.whl)

say "installing $(basename "$wheel")[local,piper] into a fresh venv"
rm -rf "$work/venv" && "$python" -m venv "$work/venv"
links=()
for dir in "${PARLEY_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley/wheels}"/llama-cpp-python-*/; do
  [ -d "$dir" ] && links+=(--find-links "$dir")
done
"$work/venv/bin/pip" install -q -c "$root/constraints.txt" "${links[@]}" "$wheel[local,piper]"

run="$work/run"  # outside the source tree, with caches and data of its own
mkdir -p "$run"
export XDG_CACHE_HOME="$work/xdg" PARLEY_MODEL_CACHE="$work/models" PARLEY_DATA_DIR="$work/data"
export PARLEY_SIP_PORT=0 PARLEY_PORT=${PARLEY_PORT:-8765} PARLEY_LOG_FORMAT=json
unset PARLEY_MODELS_DIR
cd "$run"
"$work/venv/bin/python" - <<'PY'
import parley, sys
assert "site-packages" in parley.__file__, parley.__file__
print(f"check-wheel: parley imported from {parley.__file__}", file=sys.stderr)
PY

say "parley serve (self-check of the embedded models, with empty caches)"
"$work/venv/bin/parley" serve > "$work/serve.log" 2>&1 &
server=$!
stop() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
for _ in $(seq 1 600); do
  if "$work/venv/bin/python" -c "import httpx,sys; sys.exit(httpx.get('http://127.0.0.1:$PARLEY_PORT/health').status_code != 200)" 2>/dev/null; then
    break
  fi
  kill -0 "$server" 2>/dev/null || { stop; tail -50 "$work/serve.log" >&2; say "FAIL: parley serve exited"; exit 1; }
  sleep 1
done
stop
if grep -q embedded_model_unavailable "$work/serve.log" || ! grep -q '"event": "parley_started"' "$work/serve.log"; then
  grep -E "embedded_model_unavailable|parley_started|error" "$work/serve.log" | head -20 >&2
  say "FAIL: the default agent's models did not all load (see $work/serve.log)"
  exit 1
fi
"$work/venv/bin/python" - "$XDG_CACHE_HOME" <<'PY'
import json, sys
from pathlib import Path

(result,) = Path(sys.argv[1], "parley", "selfcheck").glob("*.json")
stages = json.loads(result.read_text())
assert set(stages) == {"vad", "stt", "llm", "tts"} and all(s["ok"] for s in stages.values()), stages
print("check-wheel: self-check passed: " + ", ".join(f"{k} {v['secs']} s" for k, v in stages.items()), file=sys.stderr)
PY
ls "$PARLEY_MODEL_CACHE"/qwen2.5-0.5b/*.gguf >/dev/null  # joined from the slice packages at first use

say "parley demo"
"$work/venv/bin/parley" demo --fast --out-dir "$run/demo" > "$work/demo.log" 2>&1 || {
  tail -30 "$work/demo.log" >&2; say "FAIL: parley demo"; exit 1;
}
[ -s "$run/demo/call.wav" ] && [ -s "$run/demo/report.json" ] && [ -s "$run/demo/receptionist.yaml" ]
say "OK: the wheel installs, serves with the default agent and plays the demo from $run"
