"""Step 85, context ladder: prompt length raised to the context; TTFT and MemAvailable per rung;
stops at the floor naming the rung."""


def test_ladder_reaches_the_context_above_the_floor(context_ladder):
    rungs = ", ".join(f"{r.tokens} tok: TTFT {r.ttft_ms} ms, MemAvailable {r.mem_available_gib}"
                      for r in context_ladder.rungs)
    assert not context_ladder.broke, f"{context_ladder.broke}\nrungs: {rungs}"
