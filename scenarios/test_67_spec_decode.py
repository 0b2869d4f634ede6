"""Step 67, speculative decoding: MTP on GPUs, ngram on the CPU; drafts are made and accepted, output unchanged."""

import pytest

from servegate.serve.spec_decode import ACCEPTED, DRAFTS, greedy_texts, prompts
from servegate.serve.variants import without_flags

pytestmark = pytest.mark.mtp


def test_drafts_are_made(speculative_run):
    assert speculative_run.counters_live, f"/metrics has no {DRAFTS} / {ACCEPTED}: speculative decoding is not live"
    assert speculative_run.drafted > 0, f"{DRAFTS} did not grow over the requests: the drafter proposed nothing"


def test_acceptance_rate_meets_floor(speculative_run, spec_expect):
    drafted, accepted = speculative_run.drafted, speculative_run.accepted
    rate = speculative_run.acceptance_rate or 0.0
    floor = spec_expect["min_acceptance_rate"]
    assert rate >= floor, (f"spec-decode acceptance rate {rate:.3f} ({accepted:.0f}/{drafted:.0f} draft tokens) "
                           f"is below the recipe's floor {floor}")


def test_greedy_output_identical_without_speculation(deployment, speculative_run, spec_expect, script):
    if not spec_expect.get("compare_without", True):
        pytest.skip("not applicable: expect.spec_decode.compare_without is false (no room for a second server)")
    texts = speculative_run.texts
    port = deployment.rendered.port + 1
    with without_flags(deployment, ["--speculative-config"], port, label="-nospec") as plain:
        reference = greedy_texts(plain, prompts(script, spec_expect["requests"]))
    mismatches = [i for i, (a, b) in enumerate(zip(texts, reference, strict=True)) if a != b]
    assert not mismatches, (f"greedy output differs with speculation on {len(mismatches)}/{len(texts)} prompts; "
                            f"first: with {texts[mismatches[0]]!r} vs without {reference[mismatches[0]]!r}")
