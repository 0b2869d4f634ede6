"""Step 6d, speculative decoding (MTP on GPUs, ngram on the CPU): drafts are made and accepted, output unchanged."""

import pytest

from servegate.serve.chat import from_message, has_flag
from servegate.serve.variants import without_flags

pytestmark = pytest.mark.mtp
DRAFTS = "vllm:spec_decode_num_draft_tokens_total"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
THINKING_OFF = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def spec_expect(serve_argv, recipe):
    if not has_flag(serve_argv, "--speculative-config"):
        pytest.skip("not applicable: the recipe has no --speculative-config")
    return recipe.expect.spec_decode or {"min_acceptance_rate": 0.0, "requests": 8, "compare_without": True}


def prompts(script, count: int) -> list[list[dict]]:
    """Prompts that give a drafter something to match: the expected answer quoted in the question."""
    quote = script["plain"]["content"] if script else "The quick brown fox jumps over the lazy dog."
    return [[{"role": "user", "content": f"Request {i}. Repeat exactly: {quote}"}] for i in range(count)]


def greedy_texts(server, messages_list, max_tokens=64) -> list[str]:
    return [from_message(server.chat(m, temperature=0, max_tokens=max_tokens, **THINKING_OFF)).content or ""
            for m in messages_list]


@pytest.fixture(scope="module")
def speculative_run(deployment, spec_expect, script):
    before = deployment.metrics()
    for name in (DRAFTS, ACCEPTED):
        assert name in before, f"/metrics has no {name}: speculative decoding is not live"
    texts = greedy_texts(deployment, prompts(script, spec_expect["requests"]))
    after = deployment.metrics()
    drafted, accepted = after[DRAFTS] - before[DRAFTS], after[ACCEPTED] - before[ACCEPTED]
    deployment.run.update("spec_decode", value={"drafted": drafted, "accepted": accepted,
                                                "acceptance_rate": accepted / drafted if drafted else None})
    return texts, drafted, accepted


def test_drafts_are_made(speculative_run):
    _, drafted, _ = speculative_run
    assert drafted > 0, f"{DRAFTS} did not grow over the requests: the drafter proposed nothing"


def test_acceptance_rate_meets_floor(speculative_run, spec_expect):
    _, drafted, accepted = speculative_run
    rate = accepted / drafted if drafted else 0.0
    floor = spec_expect["min_acceptance_rate"]
    assert rate >= floor, (f"spec-decode acceptance rate {rate:.3f} ({accepted:.0f}/{drafted:.0f} draft tokens) "
                           f"is below the recipe's floor {floor}")


def test_greedy_output_identical_without_speculation(deployment, speculative_run, spec_expect, script):
    if not spec_expect.get("compare_without", True):
        pytest.skip("not applicable: expect.spec_decode.compare_without is false (no room for a second server)")
    texts, _, _ = speculative_run
    port = deployment.rendered.port + 1
    with without_flags(deployment, ["--speculative-config"], port, label="-nospec") as plain:
        reference = greedy_texts(plain, prompts(script, spec_expect["requests"]))
    mismatches = [i for i, (a, b) in enumerate(zip(texts, reference, strict=True)) if a != b]
    assert not mismatches, (f"greedy output differs with speculation on {len(mismatches)}/{len(texts)} prompts; "
                            f"first: with {texts[mismatches[0]]!r} vs without {reference[mismatches[0]]!r}")
