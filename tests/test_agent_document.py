"""Agent documents: the example validates; every mistake is reported by its field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from parley.agent.document import AgentDocumentError, load_agent, parse_agent

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "agents" / "receptionist.yaml"


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_receptionist_is_valid() -> None:
    doc = load_agent(EXAMPLE)
    assert doc.name == "Receptionist"
    assert "colleague" in doc.system_prompt and "Harbor Street" not in doc.system_prompt  # facts: its collection
    assert doc.knowledge is not None and doc.knowledge.collections == ["bright-smile"]
    assert "Harbor Street" in (EXAMPLE.parent / "knowledge" / "bright-smile.md").read_text()
    assert (doc.stt.provider, doc.llm.provider, doc.tts.provider) == ("whisper", "llama", "piper")


def test_json_documents_work_too(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(example()))
    assert load_agent(path).name == "Receptionist"


@pytest.mark.parametrize(
    "change,field",
    [
        ({"name": ""}, "name"),
        ({"system_prompt": "   "}, "system_prompt"),
        ({"language": "english!"}, "language"),
        ({"llm": {"provider": "nope"}}, "llm.provider"),
        ({"tts": {"provider": "piper", "options": {"length_scale": "slow"}}}, "tts.options.length_scale"),
        ({"tts": {"provider": "piper", "options": {"lenght_scale": 1.0}}}, "tts.options.lenght_scale"),
        ({"llm": {"provider": "llama", "options": {"max_tokens": 0}}}, "llm.options.max_tokens"),
        ({"turn": {"end_of_turn_secs": -1}}, "turn.end_of_turn_secs"),
        ({"turn": {"pause_secs": 1.0, "end_of_turn_secs": 0.5}}, "turn"),
        ({"vad": {"threshold": 1.5}}, "vad.threshold"),
        ({"interruptions": {"enabled": "sometimes"}}, "interruptions.enabled"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_documents_name_the_field(change: dict, field: str) -> None:
    data = {**example(), **change}
    with pytest.raises(AgentDocumentError) as info:
        parse_agent(data, "agent.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "agent.yaml: invalid agent document"
    assert any(line.strip().startswith(f"{field}:") for line in lines[1:]), str(info.value)


@pytest.mark.parametrize(
    "text,message",
    [("name: [unclosed", "not valid YAML"), ("- a\n- list", "a mapping of fields"), ("", "a mapping of fields")],
)
def test_unreadable_documents_say_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(AgentDocumentError, match=message):
        load_agent(path)


def parley(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parley.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_cli_rejects_an_invalid_agent_by_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**example(), "turn": {"end_of_turn_secs": "soon"}}))
    wav = tmp_path / "in.wav"
    wav.write_bytes(b"RIFF")
    result = parley("call", str(bad), "--input", str(wav), "--output", str(tmp_path / "o.wav"))
    assert result.returncode == 2
    assert "turn.end_of_turn_secs" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "content,message",
    [(b"ID3\x03\x00 this is an mp3", "not a WAV file"), (b"", "not a WAV file"), (b"hello world" * 10, "not a WAV")],
)
def test_cli_rejects_a_non_wav_input_clearly(tmp_path: Path, content: bytes, message: str) -> None:
    src = tmp_path / "question.wav"
    src.write_bytes(content)
    result = parley("call", str(EXAMPLE), "--input", str(src), "--output", str(tmp_path / "o.wav"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "question.wav" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.wav").exists()


def test_cli_validate_command() -> None:
    result = parley("agents", "validate", str(EXAMPLE))
    assert result.returncode == 0 and "valid" in result.stdout
