"""Loading a llama.cpp model loses no other thread's log line: llama-cpp-python's ``verbose=False`` pointed fds 1
and 2 at /dev/null for the whole load, process-wide (parley.services.llm.llama_context._keep_fds).

Run in a child process: the writer thread writes to the real fd 2, which the parent reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from .support.service import ROOT

CHILD = textwrap.dedent(
    """
    import sys, threading, structlog
    from parley.logs import configure_logging, stop_logging
    from parley.services.llm.llama import LlamaLLM

    configure_logging(fmt="json", stream=sys.stderr)
    log = structlog.get_logger("ticker")
    llm = LlamaLLM(LlamaLLM.Options(model="smollm2-135m"))
    done, started, sent = threading.Event(), threading.Event(), []

    def tick() -> None:
        while not done.is_set() or len(sent) < 50:
            log.info("tick", n=len(sent))
            sent.append(1)
            started.set()
            done.wait(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    started.wait()
    for _ in range(5):  # five loads: five windows in which the old fd swap dropped lines
        llm._load().close()
    done.set()
    thread.join()
    stop_logging()
    print(len(sent))
    """
)


def test_lines_logged_while_a_model_loads_all_arrive() -> None:
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    sent = int(out.stdout.strip().splitlines()[-1])
    ticks = [json.loads(line)["n"] for line in out.stderr.splitlines() if '"event": "tick"' in line]
    assert sent >= 50 and ticks == list(range(sent)), (sent, len(ticks))
