"""Weights for the generated NemotronH models, in the NVIDIA checkpoint layout (`backbone.*`).

Random models: every tensor drawn from `numpy.random.default_rng(seed)` in a fixed order,
so the same spec gives byte-identical safetensors.

Scripted models keep those random tensors wherever they only feed a kernel (Mamba in_proj,
conv and SSM parameters, unused attention heads, unused MLP units), so vLLM's Mamba-2,
attention and MLP kernels do real work, and overwrite a few so that greedy decoding follows
the script. The hidden space is split into named one-hot dimensions:

1. Silence: every block's output projection is zero (Mamba out_proj, MLP down_proj,
   attention o_proj) except one attention head and a few MLP units below. The residual
   stream is the current token's embedding plus what those write.
2. Embeddings: one dimension per script token, plus CONST, which every token has. Tokens
   outside the script share OTHER (their successor is EOS).
3. Bigram: lm_head row s has ALPHA at the dimension of every token t with t -> s in some
   mode. Script tokens are unique within a mode, so per mode this is a chain.
4. Mode routing: the prompt's last token is a mode token (chat template). Mode tokens carry
   KEY and SOURCE_m. Head 0 of the first attention layer has query = CONST and key = KEY
   (NemotronH attention has no RoPE), so every later position attends (score ~45) to the
   mode token, reads SOURCE_m and writes MODE_m = 1 into the residual stream.
5. Shared tokens: a token t with different successors in different modes (`</think>` ->
   the answer or `<tool_call>`) gets, for each such mode m, one unit in the first MLP layer
   after that attention layer: relu2(w * (t + MODE_m - 1.5 * CONST)) is 1 exactly when the
   current token is t in mode m, else 0. Its down_proj writes BONUS_s for the successor s
   of t in m, and lm_head row s reads BONUS_s with GAMMA: ALPHA + GAMMA beats the other
   successors' ALPHA. Any script whose modes are each repeat-free is realizable.

`check_script` replays this forward pass in numpy (embedding, routing head, MLP units,
final norm, lm_head) for every mode and raises if greedy decoding would leave the script.

MTP (spec `mtp_layers: 1`): vLLM's NemotronH MTP block drafts the token after next from
x = eh_proj([enorm(embed(next token)); hnorm(target hidden state)]), one attention decoder
layer, final_layernorm and the shared lm_head. Scripted, eh_proj passes the next token's
normed embedding through and drops the hidden state, the attention's o_proj is zero, so the
draft is lm_head applied to the next token alone: the bigram map. A token whose successor
depends on the mode (the MLP units above) ties between its successors there; every other
draft is the script's next token. Its tensors are drawn after the backbone's, so the
backbone is the same as without MTP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from servegate.models.script import MODES, Script
from servegate.models.spec import ModelSpec
from servegate.models.tokenizer import EOS, MODE_TOKENS

CONST, KEY, OTHER = 0, 1, 2
ALPHA, GAMMA = 8.0, 4.0  # bigram weight; bonus for a shared token's successor in its mode
QK_SCALE = 2.0  # query and key weight: attention score to the mode token ~45
INIT_STD = 0.02
MIN_MARGIN = 10.0  # logits: the scripted token must beat every other by this much


class ScriptError(ValueError):
    """The script cannot be realized by the construction; `key` is the spec key to blame."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


def random_tensors(spec: ModelSpec) -> dict[str, np.ndarray]:
    """Every tensor of the model, random but deterministic from spec.seed."""
    rng = np.random.default_rng(spec.seed)
    h = spec.hidden_size
    tensors = {"backbone.embeddings.weight": _normal(rng, spec.vocab_size, h)}
    for index, kind in enumerate(spec.hybrid_override_pattern):
        prefix = f"backbone.layers.{index}"
        tensors[f"{prefix}.norm.weight"] = np.ones(h, np.float32)
        layer = {"M": _mamba_tensors, "*": _attention_tensors, "-": _mlp_tensors}[kind](spec, rng)
        tensors.update({f"{prefix}.mixer.{name}": value for name, value in layer.items()})
    tensors["backbone.norm_f.weight"] = np.ones(h, np.float32)
    tensors["lm_head.weight"] = _normal(rng, spec.vocab_size, h)
    if spec.mtp_layers:
        tensors.update(_mtp_tensors(spec, rng))
    return tensors


MTP_PREFIX = "mtp.layers.0"  # the checkpoint names vLLM's NemotronHMTP.load_weights reads


def _mtp_tensors(spec: ModelSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One MTP block: fusion (enorm, hnorm, eh_proj), an attention decoder layer, final_layernorm."""
    h = spec.hidden_size
    tensors = {f"{MTP_PREFIX}.{name}.weight": np.ones(h, np.float32)
               for name in ("enorm", "hnorm", "norm", "final_layernorm")}
    tensors[f"{MTP_PREFIX}.eh_proj.weight"] = _normal(rng, h, 2 * h)
    tensors.update({f"{MTP_PREFIX}.mixer.{name}": value for name, value in _attention_tensors(spec, rng).items()})
    return tensors


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * INIT_STD).astype(np.float32)


def _mamba_tensors(spec: ModelSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    heads, inner = spec.mamba_num_heads, spec.mamba_num_heads * spec.mamba_head_dim
    conv_dim = inner + 2 * spec.n_groups * spec.ssm_state_size
    dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), heads))
    return {
        "in_proj.weight": _normal(rng, inner + conv_dim + heads, spec.hidden_size),
        "conv1d.weight": _normal(rng, conv_dim, 1, spec.conv_kernel),
        "conv1d.bias": np.zeros(conv_dim, np.float32),
        "dt_bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),  # inverse softplus
        "A_log": np.log(np.arange(1, heads + 1, dtype=np.float32)),
        "D": np.ones(heads, np.float32),
        "norm.weight": np.ones(inner, np.float32),
        "out_proj.weight": _normal(rng, spec.hidden_size, inner),
    }


def _attention_tensors(spec: ModelSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    q_size = spec.num_attention_heads * spec.head_dim
    kv_size = spec.num_key_value_heads * spec.head_dim
    return {
        "q_proj.weight": _normal(rng, q_size, spec.hidden_size),
        "k_proj.weight": _normal(rng, kv_size, spec.hidden_size),
        "v_proj.weight": _normal(rng, kv_size, spec.hidden_size),
        "o_proj.weight": _normal(rng, spec.hidden_size, q_size),
    }


def _mlp_tensors(spec: ModelSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "up_proj.weight": _normal(rng, spec.intermediate_size, spec.hidden_size),
        "down_proj.weight": _normal(rng, spec.hidden_size, spec.intermediate_size),
    }


@dataclass(frozen=True)
class Plan:
    """The script as transitions, and where each named dimension lives in the hidden space."""

    sequences: dict[str, list[int]]  # written mode -> generated ids, ending with EOS
    successors: dict[int, dict[str, int]]  # token id -> {written mode: next id}
    marker_ids: dict[str, int]  # every mode -> its mode token id
    eos_id: int
    mode_dims: dict[str, int]  # written mode -> MODE_m (written by the routing head)
    source_dims: dict[str, int]  # written mode -> SOURCE_m (in the mode token's embedding)
    bonus_dims: dict[int, int]  # successor id -> BONUS_s
    token_dims: dict[int, int]  # script token id -> its one-hot dimension
    units: list[tuple[int, str, int]]  # MLP units: (shared token, mode, successor in that mode)


def plan_script(spec: ModelSpec, script: Script, vocab: dict[str, int], encode) -> Plan:
    """Lay out the script; `encode(text) -> ids`. Raises ScriptError if it cannot be realized."""
    eos_id = vocab[EOS]
    sequences = {mode: encode(reply.output_text()) + [eos_id] for mode, reply in script.replies.items()}
    successors: dict[int, dict[str, int]] = {}
    for mode, seq in sequences.items():
        _check_unique(mode, seq, vocab)
        for current, nxt in zip(seq, seq[1:], strict=False):
            successors.setdefault(current, {})[mode] = nxt
    marker_ids = {mode: vocab[MODE_TOKENS[mode]] for mode in MODES}
    for mode, tid in marker_ids.items():
        source = script.source_mode(mode)
        successors[tid] = {source: sequences[source][0]}
    units = [(tid, mode, nxt) for tid, by_mode in sorted(successors.items())
             if len(set(by_mode.values())) > 1 for mode, nxt in by_mode.items()]
    names = [*script.replies]
    bonus_targets = sorted({nxt for _, _, nxt in units})
    script_ids = sorted(set(successors) | {eos_id})
    dims = _allocate(spec, {"mode": len(names), "source": len(names), "bonus": len(bonus_targets),
                            "token": len(script_ids)})
    if len(units) > spec.intermediate_size:
        raise ScriptError(f"intermediate_size {spec.intermediate_size} is smaller than the {len(units)} "
                          "MLP units the shared tokens need", "intermediate_size")
    return Plan(sequences, successors, marker_ids, eos_id,
                mode_dims=dict(zip(names, dims["mode"], strict=True)),
                source_dims=dict(zip(names, dims["source"], strict=True)),
                bonus_dims=dict(zip(bonus_targets, dims["bonus"], strict=True)),
                token_dims=dict(zip(script_ids, dims["token"], strict=True)), units=units)


def _allocate(spec: ModelSpec, sizes: dict[str, int]) -> dict[str, list[int]]:
    """Consecutive hidden dimensions after CONST, KEY, OTHER for each named group."""
    dims, start = {}, OTHER + 1
    for name, size in sizes.items():
        dims[name] = list(range(start, start + size))
        start += size
    if start > spec.hidden_size:
        detail = ", ".join(f"{size} {name}" for name, size in sizes.items())
        raise ScriptError(f"hidden_size {spec.hidden_size} is too small: the script needs {start} "
                          f"dimensions ({detail}, 3 reserved)", "hidden_size")
    return dims


def _check_unique(mode: str, seq: list[int], vocab: dict[str, int]) -> None:
    names = {i: t for t, i in vocab.items()}
    seen: dict[int, int] = {}
    for position, tid in enumerate(seq):
        if tid in seen:
            raise ScriptError(f"mode '{mode}': token {names[tid]!r} occurs twice (token positions "
                              f"{seen[tid]} and {position}); the scripted model predicts the next token "
                              "from the current token and the mode only", f"script.{mode}")
        seen[tid] = position


def scripted_tensors(spec: ModelSpec, plan: Plan, script: Script) -> dict[str, np.ndarray]:
    """random_tensors with the overrides described in the module docstring."""
    tensors = random_tensors(spec)
    tensors["backbone.embeddings.weight"] = _embeddings(spec, plan, script)
    tensors["lm_head.weight"] = _lm_head(spec, plan)
    for index, kind in enumerate(spec.hybrid_override_pattern):
        out_name = {"M": "out_proj", "*": "o_proj", "-": "down_proj"}[kind]
        tensors[f"backbone.layers.{index}.mixer.{out_name}.weight"][:] = 0.0
    attention, mlp = _routing_layers(spec)
    _route_modes(spec, plan, _mixer(tensors, attention, "q_proj", "k_proj", "v_proj", "o_proj"))
    _bonus_units(spec, plan, _mixer(tensors, mlp, "up_proj", "down_proj"))
    if spec.mtp_layers:
        _mtp_pass_next_token(spec, tensors)
    return tensors


def _mtp_pass_next_token(spec: ModelSpec, tensors: dict[str, np.ndarray]) -> None:
    """eh_proj = [I | 0]: the next token's normed embedding in, the hidden state out; o_proj silent."""
    h = spec.hidden_size
    eh_proj = np.zeros((h, 2 * h), np.float32)
    eh_proj[:, :h] = np.eye(h, dtype=np.float32)
    tensors[f"{MTP_PREFIX}.eh_proj.weight"] = eh_proj
    tensors[f"{MTP_PREFIX}.mixer.o_proj.weight"][:] = 0.0


def _routing_layers(spec: ModelSpec) -> tuple[int, int]:
    """Index of the first attention layer and of the first MLP layer after it."""
    pattern = spec.hybrid_override_pattern
    attention = pattern.index("*")
    return attention, pattern.index("-", attention)


def _mixer(tensors: dict[str, np.ndarray], layer: int, *names: str) -> dict[str, np.ndarray]:
    return {name: tensors[f"backbone.layers.{layer}.mixer.{name}.weight"] for name in names}


def _embeddings(spec: ModelSpec, plan: Plan, script: Script) -> np.ndarray:
    emb = np.zeros((spec.vocab_size, spec.hidden_size), np.float32)
    emb[:, CONST] = 1.0
    emb[:, OTHER] = 1.0
    for tid, dim in plan.token_dims.items():
        emb[tid, OTHER] = 0.0
        emb[tid, dim] = 1.0
    for mode, tid in plan.marker_ids.items():
        emb[tid, KEY] = 1.0
        emb[tid, plan.source_dims[script.source_mode(mode)]] = 1.0
    return emb


def _lm_head(spec: ModelSpec, plan: Plan) -> np.ndarray:
    head = np.zeros((spec.vocab_size, spec.hidden_size), np.float32)
    for current, by_mode in plan.successors.items():
        for nxt in by_mode.values():
            head[nxt, plan.token_dims[current]] = ALPHA
    head[plan.eos_id, OTHER] = ALPHA
    for nxt, dim in plan.bonus_dims.items():
        head[nxt, dim] = GAMMA
    return head


def _route_modes(spec: ModelSpec, plan: Plan, w: dict[str, np.ndarray]) -> None:
    """Head 0 (and kv head 0) attend to the mode token and copy SOURCE_m to MODE_m (doc, 4)."""
    d = spec.head_dim
    if len(plan.mode_dims) > d:
        raise ScriptError(f"head_dim {d} is smaller than the {len(plan.mode_dims)} script modes", "head_dim")
    for name in ("q_proj", "k_proj", "v_proj"):
        w[name][:d] = 0.0
    w["q_proj"][0, CONST] = QK_SCALE
    w["k_proj"][0, KEY] = QK_SCALE
    # A mode token's embedding has norm 2 (self, CONST, KEY, SOURCE): after RMSNorm its SOURCE
    # entry is sqrt(H)/2, so o_proj scales it back to 1 in the residual stream.
    for j, mode in enumerate(plan.mode_dims):
        w["v_proj"][j, plan.source_dims[mode]] = 1.0
        w["o_proj"][plan.mode_dims[mode], j] = 2.0 / math.sqrt(spec.hidden_size)


def _bonus_units(spec: ModelSpec, plan: Plan, w: dict[str, np.ndarray]) -> None:
    """MLP unit per (shared token, mode): fires 1 only on that pair, writes BONUS_s (doc, 5)."""
    # Input t + MODE_m has norm sqrt(3): RMSNorm makes each entry sqrt(H/3); the unit's
    # pre-activation w * (1 + 1 - 1.5) * sqrt(H/3) is 1 on the pair, <= 0 on anything else.
    scale = 2.0 / math.sqrt(spec.hidden_size / 3.0)
    for unit, (tid, mode, nxt) in enumerate(plan.units):
        w["up_proj"][unit] = 0.0
        w["up_proj"][unit, plan.token_dims[tid]] = scale
        w["up_proj"][unit, plan.mode_dims[mode]] = scale
        w["up_proj"][unit, CONST] = -1.5 * scale
        w["down_proj"][plan.bonus_dims[nxt], unit] = 1.0


def check_script(spec: ModelSpec, plan: Plan, script: Script, tensors: dict[str, np.ndarray],
                 prompt_prefix: list[int]) -> None:
    """Greedy-decode every mode with a numpy replay of the forward pass; raise ScriptError on a miss."""
    for mode in MODES:
        expected = plan.sequences[script.source_mode(mode)]
        context = [*prompt_prefix, plan.marker_ids[mode]]
        for position, want in enumerate(expected):
            logits = replay_logits(spec, tensors, context)
            got = int(np.argmax(logits))
            margin = float(logits[want] - np.max(np.delete(logits, want)))
            if got != want or margin < MIN_MARGIN:
                raise ScriptError(f"mode '{mode}': at reply token {position} the model would emit id "
                                  f"{got} instead of {want} (margin {margin:.1f} < {MIN_MARGIN})",
                                  f"script.{mode}")
            context.append(want)


def replay_logits(spec: ModelSpec, tensors: dict[str, np.ndarray], context: list[int]) -> np.ndarray:
    """Last-position logits computed from the tensors, given that every other block outputs zero."""
    attention, mlp = _routing_layers(spec)
    x = tensors["backbone.embeddings.weight"][context].astype(np.float64)
    eps = spec.layer_norm_epsilon
    residual = x[-1] + _attention_last(spec, _mixer(tensors, attention, "q_proj", "k_proj", "v_proj",
                                                    "o_proj"), _rms_norm(x, eps))
    w = _mixer(tensors, mlp, "up_proj", "down_proj")
    hidden = np.maximum(w["up_proj"] @ _rms_norm(residual, eps), 0.0) ** 2
    residual = residual + w["down_proj"] @ hidden
    return tensors["lm_head.weight"] @ _rms_norm(residual, eps)


def replay_mtp_logits(spec: ModelSpec, tensors: dict[str, np.ndarray], next_ids: list[int],
                      hidden: np.ndarray) -> np.ndarray:
    """Last-position draft logits of the MTP block: next_ids[i] is the token after position i,
    hidden[i] the target model's hidden state at i (norm weights are ones, as generated)."""
    eps = spec.layer_norm_epsilon
    embedded = tensors["backbone.embeddings.weight"][next_ids].astype(np.float64)
    fused = np.concatenate([_rms_norm(embedded, eps), _rms_norm(hidden, eps)], axis=-1)
    x = fused @ tensors[f"{MTP_PREFIX}.eh_proj.weight"].T
    w = {name: tensors[f"{MTP_PREFIX}.mixer.{name}.weight"] for name in ("q_proj", "k_proj", "v_proj", "o_proj")}
    out = x[-1] + _attention_last(spec, w, _rms_norm(x, eps))
    return tensors["lm_head.weight"] @ _rms_norm(out, eps)


def check_mtp_drafts(spec: ModelSpec, plan: Plan, tensors: dict[str, np.ndarray]) -> int:
    """Every script token with one successor in all modes must draft that successor (numpy replay of
    the MTP block, an arbitrary hidden state); return how many tokens are mode-dependent (ambiguous)."""
    hidden = np.ones((1, spec.hidden_size))
    ambiguous = 0
    for current, by_mode in sorted(plan.successors.items()):
        if len(set(by_mode.values())) > 1:
            ambiguous += 1
            continue
        want = next(iter(by_mode.values()))
        logits = replay_mtp_logits(spec, tensors, [current], hidden)
        margin = float(logits[want] - np.max(np.delete(logits, want)))
        if int(np.argmax(logits)) != want or margin < MIN_MARGIN:
            raise ScriptError(f"MTP block: token id {current} drafts id {int(np.argmax(logits))} instead of "
                              f"{want} (margin {margin:.1f} < {MIN_MARGIN})", "mtp_layers")
    return ambiguous


def _attention_last(spec: ModelSpec, w: dict[str, np.ndarray], normed: np.ndarray) -> np.ndarray:
    """Causal self-attention output at the last position (GQA, no positional encoding)."""
    heads, kv_heads, d = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    q = (normed[-1] @ w["q_proj"].T).reshape(heads, d)
    k = (normed @ w["k_proj"].T).reshape(len(normed), kv_heads, d)
    v = (normed @ w["v_proj"].T).reshape(len(normed), kv_heads, d)
    outs = []
    for h in range(heads):
        kv = h // (heads // kv_heads)
        scores = k[:, kv] @ q[h] / math.sqrt(d)
        weights = np.exp(scores - scores.max())
        outs.append((weights / weights.sum()) @ v[:, kv])
    return w["o_proj"] @ np.concatenate(outs)


def _rms_norm(x: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
