"""Step 65, reasoning: the recipe's reasoning parser puts the thinking in `reasoning`, never in `content`."""

import pytest

from servegate.serve.chat import from_message, from_stream, leaked_markup

QUESTION = [{"role": "user", "content": "Please greet me."}]
THINKING_OFF = {"chat_template_kwargs": {"enable_thinking": False}}


def ask(deployment, stream: bool, **params):
    params.setdefault("max_tokens", 96)
    if stream:
        return from_stream(deployment.stream_chat(QUESTION, temperature=0, **params))
    return from_message(deployment.chat(QUESTION, temperature=0, **params))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_thinking_goes_to_reasoning(deployment, parser, script, stream):
    reply = ask(deployment, stream)
    assert not leaked_markup(reply.content), \
        f"parser {parser}: the thinking leaked into content ({leaked_markup(reply.content)} found): {reply.content!r}"
    assert reply.reasoning, f"parser {parser}: no reasoning in the reply; content was {reply.content!r}"
    assert not leaked_markup(reply.reasoning), f"parser {parser}: markup left in reasoning: {reply.reasoning!r}"
    if script:
        assert reply.reasoning.strip() == script["think"]["reasoning"], f"reasoning {reply.reasoning!r}"
        assert (reply.content or "").strip() == script["think"]["content"], \
            f"parser {parser}: content {reply.content!r}, expected {script['think']['content']!r}"
    else:
        assert (reply.content or "").strip(), f"parser {parser}: empty content after the reasoning"


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_thinking_off_gives_no_reasoning(deployment, parser, recipe, script, stream):
    if not (recipe.expect.reasoning or {}).get("thinking_toggle", True):
        pytest.skip("not applicable: expect.reasoning.thinking_toggle is false for this model")
    reply = ask(deployment, stream, **THINKING_OFF)
    assert not reply.reasoning, f"parser {parser}: enable_thinking=false still produced reasoning {reply.reasoning!r}"
    assert (reply.content or "").strip(), "enable_thinking=false gave empty content"
    assert not leaked_markup(reply.content), f"markup in content with thinking off: {reply.content!r}"
    if script:
        assert reply.content.strip() == script["plain"]["content"]


FORCE_NONEMPTY_PARSERS = {"nemotron_v3", "granite_thinking_parser"}


def test_force_nonempty_content_moves_unfinished_reasoning_to_content(deployment, parser):
    if parser not in FORCE_NONEMPTY_PARSERS:
        pytest.skip(f"not applicable: parser {parser} does not document force_nonempty_content")
    cut_short = {"max_tokens": 4}
    plain = ask(deployment, False, **cut_short)
    assert plain.reasoning and not (plain.content or "").strip(), \
        (f"a reply cut after 4 tokens should be all reasoning; "
         f"got reasoning {plain.reasoning!r}, content {plain.content!r}")
    forced = ask(deployment, False, chat_template_kwargs={"force_nonempty_content": True}, **cut_short)
    assert (forced.content or "").strip() == plain.reasoning.strip(), \
        f"parser {parser}: force_nonempty_content should swap the reasoning into content; got {forced}"
    assert not forced.reasoning
