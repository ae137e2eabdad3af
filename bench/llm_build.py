"""Speed of the installed llama.cpp build on this CPU: prompt evaluation, first token, tokens per second.

Used to choose the build flags (scripts/install-llama.sh): run it with the venv of each build, e.g.

    .venv/bin/python bench/llm_build.py --runs 5
    PYTHONPATH=/path/to/other/site-packages .venv/bin/python bench/llm_build.py --runs 5

Prints JSON: the build's system info (which instruction sets it uses), median and best of each figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import llama_cpp
from support import cpu_model

from parley.services.llm.llama import default_model_path

PROMPT = Path(__file__).resolve().parents[1] / "examples" / "agents" / "receptionist.yaml"


def one_run(llm: llama_cpp.Llama, system: str, tokens: int) -> dict[str, float]:
    llm.reset()  # no prefix cache: every run evaluates the whole prompt
    llama_cpp.llama_perf_context_reset(llm.ctx)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "When are you open on Saturday?"}]
    start = time.perf_counter()
    first: float | None = None
    n = 0
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=tokens, temperature=0, stream=True):  # type: ignore[arg-type]
        if chunk["choices"][0]["delta"].get("content"):  # type: ignore[index, union-attr]
            n += 1
            first = first if first is not None else time.perf_counter() - start
    total = time.perf_counter() - start
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return {
        "ttft_cold_ms": (first or total) * 1000,
        "prompt_tokens": perf.n_p_eval,
        "prompt_tok_s": perf.n_p_eval / max(perf.t_p_eval_ms / 1000, 1e-9),
        "gen_tok_s": perf.n_eval / max(perf.t_eval_ms / 1000, 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threads-batch", type=int, default=2)
    args = parser.parse_args()
    system = PROMPT.read_text()
    llm = llama_cpp.Llama(
        model_path=str(default_model_path()), n_ctx=2048, n_threads=args.threads,
        n_threads_batch=args.threads_batch, verbose=False,
    )  # fmt: skip
    runs = [one_run(llm, system, args.tokens) for _ in range(args.runs)]
    out = {
        "cpu": cpu_model(),
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode(),
        "runs": args.runs,
    }
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[key] = {"median": round(statistics.median(values), 1), "best": round(max(values) if "tok_s" in key
                                                                                  else min(values), 1)}  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
