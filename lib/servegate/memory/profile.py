"""Learn from a run: what vLLM measured at one setting, to predict others.

A memory profile holds one calibration: the settings (reservation, max_num_batched_tokens, max_num_seqs,
MTP drafting, ranks) and what vLLM reported at them (KV cache memory, and where logged: weights as
loaded, peak activation, non-torch memory). The planner then keeps every measured figure that does not
depend on the settings, and recomputes the ones that do:
  weights      as loaded (measured), less or plus the MTP layers when drafting changes
  activation   the planner's formula at the new batch, scaled by measured / formula at the calibration
               (when vLLM logged its peak activation)
  residual     (reservation - KV) - weights - activation - CUDA-graph estimate (when logged) at the
               calibration: non-torch memory, allocator slack, and whatever the formulas miss; carried
               over unchanged (the CUDA-graph term is recomputed for the new setting, memory/graphs.py)
  unified      true when the calibration ran on a unified-memory node: its residual then already holds
               the host growth vLLM counts there (terms.uma_host), which a discrete calibration lacks
`servegate memory profile RUN` writes one from a finished run (run.json's plan + the head's vLLM log),
beside the recipe's baseline; `servegate memory plan RECIPE --profile FILE` uses it. A profile can also
be written by hand from a published log (each figure with its source), as recipes/models/profiles/ does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from servegate.errors import Location, RecipeError
from servegate.memory.units import GIB

LOG_LINES = {
    # negative at a start that fails ("No available memory for the cache blocks"): still a calibration
    "kv_cache_gib": re.compile(r"Available KV cache memory: (-?[\d.]+) GiB"),
    "weights_gib": re.compile(r"Model loading took ([\d.]+) GiB"),
    "peak_activation_gib": re.compile(r"([\d.]+) GiB for peak activation|torch peak memory increase: ([\d.]+)GiB"),
    "non_torch_gib": re.compile(r"([\d.]+) GiB for non-torch memory|non-torch forward increase memory: ([\d.]+)GiB"),
    # vLLM 0.21+: what graph capture was estimated to take, subtracted from KV (absent when eager)
    "cudagraph_estimate_gib": re.compile(r"Estimated CUDA graph memory: ([\d.]+) GiB total"),
}
CALIBRATION_KEYS = {"budget_gib", "max_num_batched_tokens", "max_num_seqs", "drafts_with_mtp", "ranks"}
MEASURED_KEYS = {"kv_cache_gib", "weights_gib", "peak_activation_gib", "non_torch_gib", "cudagraph_estimate_gib"}


def parse_log(text: str) -> dict[str, float]:
    """The last value of each memory line vLLM logs at start (INFO; the activation/non-torch split is DEBUG)."""
    found = {}
    for key, pattern in LOG_LINES.items():
        matches = pattern.findall(text)
        if matches:
            last = matches[-1]
            value = next((v for v in last if v), None) if isinstance(last, tuple) else last
            if value:
                found[key] = float(value)
    return found


def load_profile(path: Path) -> dict:
    """A profile file, checked: calibration and measured figures, each a number where one is needed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecipeError(f"memory profile: cannot read it as JSON: {exc}", where=Location(file=str(path)),
                          fix="write it with `servegate memory profile RUN`") from None
    if not isinstance(data, dict):
        raise RecipeError(f"memory profile {path}: expected a JSON object")
    calibration, measured = data.get("calibration"), data.get("measured")
    if not isinstance(calibration, dict) or not isinstance(measured, dict):
        raise RecipeError(f"memory profile {path}: needs 'calibration' and 'measured' objects")
    missing = sorted(CALIBRATION_KEYS - set(calibration))
    if missing or "kv_cache_gib" not in measured:
        raise RecipeError(f"memory profile {path}: missing {missing or ['measured.kv_cache_gib']}",
                          fix=f"calibration needs {sorted(CALIBRATION_KEYS)}; measured needs kv_cache_gib")
    for section, keys in (("calibration", CALIBRATION_KEYS - {"drafts_with_mtp"}), ("measured", MEASURED_KEYS)):
        for key in keys:
            value = data[section].get(key)
            negative_ok = key == "kv_cache_gib"  # a failed start logs what was missing as a negative figure
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or (value < 0 and not negative_ok)):
                raise RecipeError(f"memory profile {path}: {section}.{key} = {value!r} is not a size/count",
                                  fix="write a non-negative number (GiB for *_gib; kv_cache_gib may be negative)")
    unified = calibration.get("unified", False)
    if not isinstance(unified, bool):
        raise RecipeError(f"memory profile {path}: calibration.unified = {unified!r} is not true/false",
                          fix="true when the calibration ran on a unified-memory node (DGX Spark), else false")
    data["path"] = str(path)
    return data


def profile_from_run(run_dir: Path) -> dict:
    """A profile from a finished run: the settings from run.json's memory plan, the figures from the log."""
    from servegate.results.schema import load_run

    run = load_run(run_dir)
    plan = (run.get("memory") or {}).get("plan")
    if not plan or plan.get("budget_bytes") is None:
        raise RecipeError(f"{run_dir}: run.json has no GPU memory plan (step 55) to calibrate against",
                          fix="profile a run of a GPU recipe that went through step 55")
    logs = sorted(Path(run_dir, "logs").glob("*serve*.log"))
    measured = parse_log("\n".join(p.read_text(errors="replace") for p in logs[:1]))
    if "kv_cache_gib" not in measured:
        raise RecipeError(f"{run_dir}: no 'Available KV cache memory' line in {logs[:1] or 'logs/*serve*.log'}",
                          fix="profile a run whose server got as far as allocating its KV cache")
    return {
        "source": str(run_dir),
        "recipe": (run.get("recipe") or {}).get("name"),
        "calibration": {
            "budget_gib": plan["budget_bytes"] / GIB,
            "max_num_batched_tokens": plan["max_num_batched_tokens"],
            "max_num_seqs": plan["max_num_seqs"],
            "drafts_with_mtp": bool(plan.get("drafts_with_mtp")),
            "ranks": plan["tensor_parallel"] * plan["pipeline_parallel"],
            # on unified memory vLLM's non-torch figure already holds the host's growth (terms.uma_host)
            "unified": bool(plan.get("unified")),
        },
        "measured": {key: measured.get(key) for key in sorted(MEASURED_KEYS)},
    }
