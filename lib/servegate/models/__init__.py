"""Tiny NemotronH models that servegate generates itself (no model hub needed).

`load_spec(path)` validates a recipes/models/*.yaml spec (pyyaml only); `generate(spec, out_dir)`
writes a Hugging Face folder vLLM can serve (needs numpy and tokenizers: run it with
the vLLM venv's python). A spec without `script:` gives random weights; with `script:` the
weights make greedy decoding follow the script in every chat mode (see weights.py). `mtp_layers: 1`
adds one NemotronH MTP layer (vLLM `--speculative-config '{"method": "mtp", ...}'`); scripted, its
drafts follow the same bigram chain.
"""

from servegate.models.script import MODES, Reply, Script, ToolCall
from servegate.models.spec import ModelSpec, load_spec, parse_spec


def generate(spec, out_dir):
    """See servegate.models.build.generate (imported lazily: it needs numpy and tokenizers)."""
    from servegate.models.build import generate as _generate  # lazy: optional heavy numpy + tokenizers

    return _generate(spec, out_dir)


__all__ = ["MODES", "ModelSpec", "Reply", "Script", "ToolCall", "generate", "load_spec", "parse_spec"]
