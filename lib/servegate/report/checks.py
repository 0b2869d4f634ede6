"""Report blocks of issue 18's checks, read from run.json: stack parity, fabric, startup timing, multi-turn
tool use, the context ladder (with its plot), and per-level benchmark validity and noise."""

from __future__ import annotations

from pathlib import Path

from servegate.report.blocks import Heading, Image, Table, Text


def check_blocks(run, out_dir: Path) -> list:
    data, out = run.data, []
    parity = data.get("stack_parity")
    if parity:
        rows = [[node, fp.get("nvidia_driver", "?"), fp.get("cuda_runtime", "?"), fp.get("kernel", "?"),
                 str(fp.get("nccl", "?")), ", ".join(f"{k} {v}" for k, v in (fp.get("packages") or {}).items()
                                                    if v != "not installed"),
                 str(fp.get("freeze_sha256", ""))[:12], str(fp.get("image", "?"))[:24]]
                for node, fp in parity.get("nodes", {}).items()]
        out += [Heading("Stack parity", 3),
                Table(["node", "driver", "CUDA", "kernel", "NCCL", "packages", "freeze", "image"], rows),
                Text("differences:\n" + "\n".join(parity["differences"]) if parity.get("differences")
                     else "identical on every node. " + " ".join(parity.get("notes", [])))]
    fabric = data.get("fabric")
    if fabric:
        lines = fabric.get("problems") or ["no problem found"]
        reduce = fabric.get("allreduce")
        out += [Heading("Fabric", 3), Text("\n".join(lines + fabric.get("notes", []) +
                                                    ([f"all-reduce: {reduce}"] if reduce else [])))]
    out += _startup(data.get("startup"))
    out += _multiturn(data.get("multiturn"))
    out += _ladder(run, data.get("ladder"), out_dir)
    out += _validity(run.throughput)
    return out


def _startup(startup: dict | None) -> list:
    if not startup:
        return []
    out = [Heading("Startup timing (s from process start)", 3),
           Table(["node", "roles", "port open", "HTTP ready", "first token"],
                 [[node, ", ".join(e.get("roles", [])), _s(e.get("port_open_s")), _s(e.get("http_ready_s")),
                   _s(e.get("first_token_s") or e.get("joined_server_ready_s"))] for node, e in startup.items()])]
    rows = [[node, str(e.get("container_started_at") or "-"), _s(e.get("container_to_process_start_s")),
             _s(e.get("container_to_port_open_s")), _s(e.get("container_to_http_ready_s")),
             _s(e.get("container_to_first_token_s"))] for node, e in startup.items() if "container_to_port_open_s" in e]
    if rows:
        out += [Heading("Startup timing (s from each node's container start)", 3),
                Table(["node", "container started", "vLLM spawned", "port open", "HTTP ready", "first token"], rows),
                Text("the container starts before the pre-launch steps (env probe, mods, model, weights, flags, "
                     "Ray), so 'vLLM spawned' holds them")]
    return out


def _multiturn(talks: dict | None) -> list:
    if not talks:
        return []
    rows = []
    for mode in ("plain", "streamed"):
        talk = talks.get(mode) or {}
        answer = talk.get("answer") or {}
        call = (talk.get("call") or {}).get("tool_calls") or [{}]
        rows.append([mode, f"{call[0].get('name', '-')}({call[0].get('arguments', '')})",
                     str(answer.get("reasoning")), str(answer.get("content")),
                     "; ".join(talk.get("problems") or []) or talk.get("error") or "ok"])
    parity = talks.get("parity") or []
    return [Heading("Multi-turn tool use", 3),
            Table(["mode", "turn 1 tool call", "turn 2 reasoning", "turn 2 content", "problems"], rows),
            Text("streamed == plain" if not parity else "streamed != plain:\n" + "\n".join(parity))]


def _ladder(run, ladder: dict | None, out_dir: Path) -> list:
    if not ladder:
        return []
    rows = [[str(r["index"]), str(r["tokens"]), _s(r.get("ttft_ms")),
             ", ".join(f"{n} {v:.2f}" for n, v in r.get("mem_available_gib", {}).items()),
             ", ".join(f"{n} {v:.2f}" for n, v in r.get("gpu_used_gib", {}).items()) or "-", r.get("error") or ""]
            for r in ladder.get("rungs", [])]
    out = [Heading("Context ladder", 3),
           Table(["rung", "prompt tokens", "TTFT ms", "MemAvailable GiB", "GPU used GiB", "error"], rows),
           Text(ladder.get("broke") or f"reached the context ({ladder.get('context')}) above the floor "
                                       f"{ladder.get('floor_gib')} GiB")]
    png = run.path / "ladder" / "ladder.png"
    if png.is_file():
        copy = out_dir / f"{run.name}-ladder.png"
        copy.write_bytes(png.read_bytes())
        out.append(Image(copy, "TTFT and MemAvailable per rung"))
    return out


def _validity(throughput: dict | None) -> list:
    if not throughput:
        return []
    rows = []
    for name, entry in throughput.get("workloads", {}).items():
        for lv in entry["levels"]:
            v = lv.get("validity") or {}
            noise = ", ".join(f"{k} +-{c['half_pct']:.1f} %" for k, c in (lv.get("ci") or {}).items())
            rows.append([name, str(lv["concurrency"]), str(lv.get("repeats", 1)),
                         f"{v.get('ok', '-')}/{v.get('requests', '-')}", str(v.get("http_errors") or "-"),
                         str(v.get("output_range") or "-"), str(v.get("input_range") or "-"),
                         "; ".join(v.get("problems") or []) or "valid", noise or "-"])
    return [Heading("Benchmark validity and noise", 3),
            Table(["workload", "conc", "repeats", "ok/sent", "HTTP errors", "output tokens", "input tokens",
                   "validity", "95 % CI"], rows)] if rows else []


def _s(value) -> str:
    return "-" if value is None else f"{float(value):.1f}"
