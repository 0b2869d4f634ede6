"""Startup timing (item 7), multi-turn tool use with stream/plain parity (item 5) and the context ladder
(item 6), against real vLLM on the CPU serving the scripted tiny model; each check also made to fail for its
named cause: a startup limit below what was measured, a MemAvailable floor above the machine's, and a
recipe served with the wrong reasoning parser."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servegate.stack import Stack
from servegate.steps import ladder, multiturn, startup

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("SERVEGATE_TEST_PORT", "18310"))
SCRIPT = {"think_tool_result": {"reasoning": "The forecast came back, now I can reply",
                                "content": "Paris is sunny and mild today."}}


def scripted_recipe(tmp_path: Path, reasoning_parser: str) -> Path:
    text = (REPO / "recipes" / "local-scripted.yaml").read_text()
    text = text.replace("--reasoning-parser nemotron_v3", f"--reasoning-parser {reasoning_parser}")
    text = text.replace("- mods/", f"- {REPO}/recipes/mods/")
    text = text.replace("parser: nemotron_v3", f"parser: {reasoning_parser}")
    path = tmp_path / f"scripted-{reasoning_parser}.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    stack = Stack.from_files(REPO / "recipes" / "local-scripted.yaml", None, {"port": PORT},
                             results_root=tmp_path_factory.mktemp("results"))
    with stack.deployment() as deployment:
        yield stack, deployment


def test_startup_phases_from_process_start(served):
    stack, deployment = served
    timings = startup.per_node([(x.launch.node.name, x.launch.role) for x in deployment.launched],
                               deployment.readiness)
    entry = timings[stack.cluster.head.name]
    assert 0 < entry["port_open_s"] <= entry["http_ready_s"] <= entry["first_token_s"], entry
    assert startup.check(timings, {"max_first_token_s": 3600}) == []
    late = startup.check(timings, {"max_port_open_s": 0.01})
    assert [x.phase for x in late] == ["port_open_s"]
    assert f"node {stack.cluster.head.name}: time to port open" in str(late[0])
    assert "exceeds expect.startup.max_port_open_s = 0.01 s" in str(late[0])
    print("startup phases:", entry)


def test_multiturn_plain_and_streamed_agree(served):
    _, deployment = served
    plain, streamed = multiturn.converse(deployment, False), multiturn.converse(deployment, True)
    assert multiturn.problems(plain, SCRIPT) == [] and multiturn.problems(streamed, SCRIPT) == []
    assert multiturn.parity(plain, streamed) == []
    assert plain.call.tool_calls[0].name == "get_weather"
    assert plain.answer.content.strip() == "Paris is sunny and mild today."


def test_ladder_climbs_to_the_context_and_a_high_floor_stops_it(served, tmp_path):
    stack, deployment = served
    sizes = ladder.rung_sizes(128, 1024, 4)
    assert sizes == [128, 256, 512, 1019]
    send = lambda n: ladder.first_token_ms(deployment, n, 4, 300)  # noqa: E731
    measure = lambda: ladder.memory(stack.hosts)  # noqa: E731
    climbed = ladder.climb(send, measure, sizes, 0.1, 1024)
    assert not climbed.broke and [r.tokens for r in climbed.rungs] == sizes
    assert all(r.ttft_ms and r.mem_available_gib for r in climbed.rungs)
    ladder.plot(climbed, "ladder", tmp_path / "ladder.png")
    assert (tmp_path / "ladder.png").stat().st_size > 10_000
    node = stack.cluster.head.name
    high = climbed.rungs[0].mem_available_gib[node] + 1000
    stopped = ladder.climb(send, measure, sizes, high, 1024)
    assert len(stopped.rungs) == 1
    assert stopped.broke.startswith(f"rung 1 (128 prompt tokens) broke the floor: MemAvailable on {node} ")
    too_long = ladder.climb(send, measure, [2048], 0.1, 1024)
    assert too_long.broke.startswith("rung 1 (2048 prompt tokens) failed: HTTP 400")
    print("ladder:", [(r.tokens, r.ttft_ms, r.mem_available_gib) for r in climbed.rungs])


def test_wrong_reasoning_parser_fails_the_multiturn_check(tmp_path):
    stack = Stack.from_files(scripted_recipe(tmp_path, "granite"), None, {"port": PORT + 1},
                             results_root=tmp_path / "results")
    with stack.deployment() as deployment:
        plain, streamed = multiturn.converse(deployment, False), multiturn.converse(deployment, True)
    found = multiturn.problems(plain, SCRIPT) + multiturn.problems(streamed, SCRIPT)
    print("wrong parser:", found)
    assert any("carries raw markup ['<think>', '</think>']" in p for p in found), found
    assert any("final reasoning None, the script says" in p for p in found), found
