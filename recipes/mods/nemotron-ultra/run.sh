#!/usr/bin/env bash
# nemotron-ultra (seed 003, "Custom mods"): registers the nemotron_h architecture and the nemotron_v3
# reasoning parser in the in-container vLLM. The upstream patch text is not public in our seeds; vLLM
# >= 0.20 ships both, so this mod verifies they are present and fails loudly when they are not, instead of
# letting `vllm serve` die at engine start. A parser file staged next to the mod (nemotron_v3_reasoning_parser.py)
# is copied into the workspace and imported, which registers it on versions that lack it.
set -euo pipefail
PYTHON="${VLLM_PYTHON:-python3}"
if [ -f nemotron_v3_reasoning_parser.py ]; then
  cp nemotron_v3_reasoning_parser.py "${WORKSPACE_DIR:-.}/"
fi
"$PYTHON" - <<'PY'
import importlib.util, os, sys
from vllm.model_executor.models.registry import ModelRegistry
from vllm.reasoning import ReasoningParserManager

missing = []
if "NemotronHForCausalLM" not in ModelRegistry.get_supported_archs():
    missing.append("architecture NemotronHForCausalLM (nemotron_h)")
staged = os.path.join(os.environ.get("WORKSPACE_DIR", "."), "nemotron_v3_reasoning_parser.py")
if os.path.isfile(staged):
    spec = importlib.util.spec_from_file_location("nemotron_v3_reasoning_parser", staged)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
names = set(getattr(ReasoningParserManager, "reasoning_parsers", {}) or {}) | set(
    getattr(ReasoningParserManager, "lazy_parsers", {}) or {})
if "nemotron_v3" not in names:
    missing.append("reasoning parser nemotron_v3")
if missing:
    sys.exit("nemotron-ultra mod: this vLLM lacks " + " and ".join(missing)
             + "; stage nemotron_v3_reasoning_parser.py in the mod folder or use vLLM >= 0.20")
print("nemotron-ultra mod: nemotron_h architecture and nemotron_v3 reasoning parser present")
PY
