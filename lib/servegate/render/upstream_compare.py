"""Compare servegate's render with what upstream's own scripts make bash run, over upstream's recipes.

    python -m servegate.render.upstream_compare UPSTREAM_CHECKOUT [--json OUT] [RECIPE ...]

UPSTREAM_CHECKOUT is a work tree of eugr/spark-vllm-docker (run-recipe.py, launch-cluster.sh, recipes/). No
upstream code is copied here; the checkout's own code runs:
 1. `run-recipe.py RECIPE --dry-run` (--solo | -n IPs for no-Ray, upstream's default | --ray -n IPs) prints the
    launch script it would hand to launch-cluster.sh;
 2. multi-node: launch-cluster.sh's functions (make_node_script, make_ray_script, parse_parallelism_from_text,
    command_needs_ray_backend) and its PEER_NODES trim block are cut out of the checkout's file and run by bash
    on that script, as its start_cluster does: a script per rank (no-Ray) or the head's (Ray);
 3. bash runs each script with PATH holding only a stand-in `vllm` that records its argv and environment.
servegate renders the same recipe on N local nodes (10.0.0.1..) with multinode no-ray / ray; the head's and the
first worker's argv and env must be equal, and a refusal on one side must be a refusal on the other. Nothing
is launched and nothing leaves this machine. Needs bash, sed and grep; PyYAML for run-recipe.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from servegate.config.cluster import Cluster, Node
from servegate.config.recipe import load_recipe
from servegate.errors import LocatedError, ServegateError
from servegate.render.command import render

MODES = ("solo", "no-ray", "ray")
SIZES = (2, 3, 4)
SHIM = "#!{python}\nimport json, os, sys\nwith open(os.environ['SHIM_OUT'], 'w') as f:\n" \
       "    json.dump({{'argv': ['vllm', *sys.argv[1:]], 'env': dict(os.environ)}}, f)\n"
# Runs the checkout's launch-cluster.sh code, cut out of the file by name ($1 file, $2 mode, $3 script, $4 out
# dir, $5 head IP, then peer IPs); prints nodes=<count after its trim>.
LAUNCH_CLUSTER = r'''
set -u
LC=$1; MODE=$2; LAUNCH_SCRIPT_PATH=$3; OUT=$4; HEAD_IP=$5; shift 5; PEER_NODES=("$@")
MASTER_PORT=$(sed -n 's/^MASTER_PORT="\([0-9]*\)"$/\1/p' "$LC" | head -1)
SOLO_MODE=false; LAUNCH_SCRIPT_MODE=true
for fn in parse_parallelism_from_text command_needs_ray_backend make_ray_script make_node_script; do
    body=$(sed -n "/^$fn() {/,/^}/p" "$LC"); [[ -n "$body" ]] || { echo "Error: no $fn in $LC"; exit 3; }
    eval "$body"
done
trim=$(sed -n '/# Trim (or error on) PEER_NODES/,/^    fi$/p' "$LC")
[[ -n "$trim" ]] || { echo "Error: no PEER_NODES trim block in $LC"; exit 3; }
eval "$trim"
total=$(( 1 + ${#PEER_NODES[@]} )); echo "nodes=$total"
if [[ "$MODE" == "no-ray" ]]; then
    for (( rank = 0; rank < total && rank < 2; rank++ )); do
        mv "$(make_node_script "$LAUNCH_SCRIPT_PATH" "$total" "$rank" "$HEAD_IP")" "$OUT/rank$rank.sh"
    done
else
    s=$(make_ray_script "$LAUNCH_SCRIPT_PATH")
    if [[ "$s" != "$LAUNCH_SCRIPT_PATH" ]]; then mv "$s" "$OUT/rank0.sh"; else cp "$s" "$OUT/rank0.sh"; fi
fi
'''


def ips(count: int) -> list[str]:
    return [f"10.0.0.{i + 1}" for i in range(count)]


def local_cluster(count: int) -> Cluster:
    nodes = [Node(f"n{i}", "head" if i == 0 else "worker", f"ssh://root@{ip}", ip, gpus=1)
             for i, ip in enumerate(ips(count))]
    return Cluster(f"compare-{count}", None, nodes)


def first_error(text: str, fallback: str) -> str:
    return next((line for line in text.splitlines() if line.startswith("Error")), fallback)


def upstream(checkout: Path, recipe: Path, mode: str, count: int, tmp: Path) -> dict:
    """The argv/env per rank (0, 1) bash hands vllm under upstream's scripts, or upstream's refusal."""
    args = [sys.executable, str(checkout / "run-recipe.py"), str(recipe), "--dry-run"]
    args += ["--solo"] if mode == "solo" else (["--ray"] if mode == "ray" else []) + ["-n", ",".join(ips(count))]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=checkout, timeout=120)
    out = proc.stdout + proc.stderr
    if "=== Generated Launch Script ===\n" not in out:
        return {"refused": first_error(out, f"run-recipe.py rc={proc.returncode}")}
    script = out.split("=== Generated Launch Script ===\n", 1)[1].split("=== What would be executed ===", 1)[0]
    (tmp / "launch.sh").write_text(script[:-1] if script.endswith("\n") else script)  # print() added "\n"
    if mode == "solo":  # launch-cluster.sh --solo runs the script unchanged
        return {"nodes": 1, "ranks": {0: run_script(tmp / "launch.sh", tmp)}}
    lc = subprocess.run(["bash", "-c", LAUNCH_CLUSTER, "lc", str(checkout / "launch-cluster.sh"), mode,
                         str(tmp / "launch.sh"), str(tmp), *ips(count)], capture_output=True, text=True, timeout=60)
    nodes = re.search(r"^nodes=(\d+)$", lc.stdout, re.M)
    if lc.returncode != 0 or not nodes:
        return {"refused": first_error(lc.stdout + lc.stderr, f"launch-cluster.sh rc={lc.returncode}")}
    ranks = {rank: run_script(tmp / f"rank{rank}.sh", tmp) for rank in (0, 1) if (tmp / f"rank{rank}.sh").exists()}
    return {"nodes": int(nodes.group(1)), "ranks": ranks}


def run_script(script: Path, tmp: Path) -> dict:
    """bash runs the script; `command not found` after vllm means bash ran a further line (a defect)."""
    shim_dir, record = tmp / "shim", tmp / "shim.json"
    shim_dir.mkdir(exist_ok=True)
    (shim_dir / "vllm").write_text(SHIM.format(python=sys.executable))
    (shim_dir / "vllm").chmod(0o755)
    record.unlink(missing_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "VLLM_API_KEY")}
    base["PATH"] = str(shim_dir)
    proc = subprocess.run(["/bin/bash", str(script)], env=dict(base, SHIM_OUT=str(record)), cwd=tmp,
                          capture_output=True, text=True, timeout=60)
    if not record.exists():
        return {"argv": None, "error": proc.stderr[-300:]}
    data = json.loads(record.read_text())
    env = {k: v for k, v in data["env"].items() if k not in ("PWD", "SHLVL", "_", "OLDPWD", "SHIM_OUT", "PATH")
           and base.get(k) != v}
    defect = "command not found" in proc.stderr
    return {"argv": data["argv"], "env": env, **({"defect": proc.stderr.strip()[-200:]} if defect else {})}


def servegate(recipe_path: Path, mode: str, count: int) -> dict:
    try:
        rendered = render(load_recipe(recipe_path), local_cluster(count), multinode=None if mode == "solo" else mode)
    except ServegateError as exc:
        where = exc.where if isinstance(exc, LocatedError) else None
        return {"refused": str(exc).splitlines()[0], "located": bool(where and where.file and where.line)}
    ranks = {}
    for launch in rendered.vllm:
        rank = 0 if launch.role == "serve" else int(launch.argv[launch.argv.index("--node-rank") + 1])
        if rank < 2:
            env = {k: v for k, v in launch.env.items() if k not in launch.node.env}
            ranks[rank] = {"argv": launch.argv, "env": env}
    return {"nodes": len(rendered.cluster.nodes), "ranks": ranks}


def verdict(up: dict, sg: dict) -> tuple[str, list[str]]:
    """equal | both-refuse | defect-reported | differ, and the differences."""
    defect = next((r["defect"] for r in up.get("ranks", {}).values() if r.get("defect")), None)
    if defect:
        if sg.get("located"):
            return "defect-reported", []
        return "differ", [f"upstream runs a defective script ({defect}); servegate: {sg.get('refused', 'renders it')}"]
    if "refused" in up or "refused" in sg:
        if "refused" in up and "refused" in sg:
            return "both-refuse", []
        return "differ", [f"refusal: upstream {up.get('refused')!r} | servegate {sg.get('refused')!r}"]
    diffs = [] if up["nodes"] == sg["nodes"] else [f"nodes: upstream {up['nodes']} | servegate {sg['nodes']}"]
    for rank, mine in up["ranks"].items():
        theirs = sg["ranks"].get(rank, {})
        for key in ("argv", "env"):
            if mine.get(key) != theirs.get(key):
                diffs.append(f"rank {rank} {key}: upstream {mine.get(key)!r} | servegate {theirs.get(key)!r}")
    return ("differ" if diffs else "equal"), diffs


def sizes(recipe: Path) -> list[int]:
    """2..4 nodes, and the N of a recipe kept in an `<N>x-spark-cluster/` folder."""
    folder = re.match(r"(?:legacy-spark-)?(\d+)x-(?:spark-)?cluster$", recipe.parent.name)
    return sorted(set(SIZES) | ({int(folder.group(1))} if folder else set()))


def compare(checkout: Path, recipe: Path) -> list[dict]:
    rows = []
    for mode in MODES:
        for count in ([1] if mode == "solo" else sizes(recipe)):
            with tempfile.TemporaryDirectory() as tmp:
                up = upstream(checkout, recipe, mode, count, Path(tmp))
            outcome, diffs = verdict(up, servegate(recipe, mode, count))
            rows.append({"recipe": str(recipe.relative_to(checkout)) if recipe.is_relative_to(checkout)
                         else str(recipe), "mode": mode, "nodes": count, "outcome": outcome, "diffs": diffs})
    return rows


def summary(rows: list[dict]) -> dict:
    table: dict = {"recipes": len({row["recipe"] for row in rows})}
    for mode in MODES:
        mine = [row["outcome"] for row in rows if row["mode"] == mode]
        table[mode] = {k: mine.count(k) for k in ("equal", "both-refuse", "defect-reported", "differ")}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m servegate.render.upstream_compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a work tree of eugr/spark-vllm-docker")
    parser.add_argument("recipe", nargs="*", type=Path, help="recipes to compare (default: all under recipes/)")
    parser.add_argument("--json", type=Path, help="write every row here")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    if not (checkout / "run-recipe.py").is_file() or not (checkout / "launch-cluster.sh").is_file():
        print(f"error: {checkout} has no run-recipe.py and launch-cluster.sh (not an upstream checkout)",
              file=sys.stderr)
        return 2
    recipes = [r.resolve() for r in args.recipe] or sorted((checkout / "recipes").rglob("*.y*ml"))
    rows = [row for recipe in recipes for row in compare(checkout, recipe)]
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    for row in rows:
        for diff in row["diffs"]:
            print(f"{row['recipe']} [{row['mode']}, {row['nodes']} node(s)]: {diff}")
    print(json.dumps(summary(rows), indent=1))
    return 1 if any(row["outcome"] == "differ" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
