#!/usr/bin/env bash
# Build llama-cpp-python portably and install it into the venv given as $1.
#
# Why: llama-cpp-python compiles llama.cpp from source with -march=native by default. A wheel built that way
# carries the build host's instruction set (AVX-512, AMX…), and llama.cpp's AMX "extra buffer type" path
# segfaults on some virtualised Sapphire Rapids hosts. GGML_NATIVE=OFF builds for x86-64-v3 (AVX2, FMA, F16C,
# BMI2): it runs on every AMD and Intel x86-64 host of the last decade, with or without AVX-512/AMX, and the
# same wheel can go into a container image built on another machine.
#
# pip's wheel cache does not see CMAKE_ARGS, so a wheel built with other flags would be reused silently: the
# wheel is built with --no-cache-dir into a folder of our own whose name is a hash of version + flags.
set -euo pipefail
# The flags are also in parley/services/llm/llama_build.py (the self-check's advice); a test keeps them equal.
venv=${1:?usage: install-llama.sh VENV}
constraints="$(dirname "$0")/../constraints.txt"
version=$(sed -n 's/^llama-cpp-python==\([^ ;]*\).*/\1/p' "$constraints")
[ -n "$version" ] || { echo "install-llama.sh: no llama-cpp-python==VERSION in $constraints" >&2; exit 1; }
case "$(uname -m)" in
  x86_64) flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON" ;;
  *) flags="-DGGML_NATIVE=OFF" ;;  # aarch64 and others: the compiler's baseline for the architecture
esac
flags="$flags -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
key=$(printf '%s\n%s\n%s\n' "$version" "$flags" "$("$venv/bin/python" -c 'import sys; print(sys.version)')" \
  | sha256sum | cut -c1-16)
cache=${PARLEY_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley/wheels}/llama-cpp-python-$version-$key
if ! ls "$cache"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $version (portable: $flags); this takes a few minutes, once per machine" >&2
  mkdir -p "$cache.tmp"
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/pip" wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
    "llama-cpp-python==$version" -w "$cache.tmp"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
"$venv/bin/pip" install -q --no-deps --force-reinstall "$cache"/llama_cpp_python-*.whl
