"""How llama-cpp-python must be built to run on any x86-64 host, for the self-check's advice when it crashed.

A plain ``pip install llama-cpp-python`` compiles llama.cpp with ``-march=native``: the wheel carries the build
host's instruction set, and llama.cpp's AMX path segfaults on some virtualised Sapphire Rapids hosts.
``scripts/install-llama.sh`` (the Makefile's) builds with the flags below instead; someone who installed Parley
from a wheel has no Makefile, so the advice spells out the pip command (tests check both say the same).
"""

from __future__ import annotations

import platform
from importlib import metadata

#: CMake flags per machine: x86-64-v3 (AVX2, FMA, F16C, BMI2), no -march=native; elsewhere the compiler's baseline
PORTABLE_FLAGS = {
    "x86_64": "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON",
}
DEFAULT_FLAGS = "-DGGML_NATIVE=OFF"
BUILD_ONLY_FLAGS = "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"


def cmake_args(machine: str | None = None) -> str:
    """The CMAKE_ARGS of a portable build on ``machine`` (default: this one)."""
    return f"{PORTABLE_FLAGS.get(machine or platform.machine(), DEFAULT_FLAGS)} {BUILD_ONLY_FLAGS}"


def rebuild_command() -> str:
    """The pip command that replaces the installed llama-cpp-python by a portable build of the same version."""
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        version = ""
    pinned = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    return (
        f'CMAKE_ARGS="{cmake_args()}" pip install --force-reinstall --no-deps --no-cache-dir '
        f"--no-binary llama-cpp-python {pinned}"
    )


def rebuild_advice() -> str:
    """What to do when llama.cpp crashed on this CPU: in a checkout, or for an installed wheel."""
    return (
        f"rebuild llama-cpp-python portably: in a checkout `rm .venv/.llama && make install`, otherwise "
        f"`{rebuild_command()}`"
    )
