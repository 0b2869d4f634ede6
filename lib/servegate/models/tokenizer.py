"""A small word-level tokenizer (HF `tokenizers` library), shared by every generated model.

Why word-level with GPT-2 byte-level pre-tokenization: each word carries its leading space
('Ġmodel'), so decoding then re-encoding a generated text gives back the same ids (clients
that re-tokenize, such as benchmark tools, count the same tokens), and the script texts of
a scripted model become one token per word without training merges. Unknown words map to
`<unk>`.

Token ids are fixed by position in `vocab_tokens()`:
  specials (never in replies, dropped by skip_special_tokens) ... `<|im_end|>` is EOS
  mode tokens `<|mode:think|>` ...: the chat template's last prompt token
  markup: `<think>`, `</think>`, `<tool_call>`, ..., and the qwen3_coder tool-call chunks
  ('\\n<function=', '>\\n<parameter=', ...) as single non-special added tokens. Being one
  token each keeps every token of a scripted tool call unique (the '\\n's would repeat).
  words: template words, the script's words, then pronounceable filler words up to vocab_size.
"""

from __future__ import annotations

from pathlib import Path

from servegate.models.script import (
    FUNCTION_CLOSE,
    FUNCTION_OPEN,
    MODES,
    PARAMETER_CLOSE,
    PARAMETER_OPEN,
    PARAMETER_VALUE,
    THINK_END,
    THINK_START,
    TOOL_CALL_END,
    TOOL_CALL_START,
    Script,
)

PAD, IM_START, IM_END, UNK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"
EOS = IM_END
SPECIAL_TOKENS = (PAD, IM_START, IM_END, UNK)
MODE_TOKENS = {mode: f"<|mode:{mode}|>" for mode in MODES}
MARKUP_TOKENS = (
    THINK_START, THINK_END, TOOL_CALL_START, TOOL_CALL_END, "<tool_response>", "</tool_response>",
    FUNCTION_OPEN, PARAMETER_OPEN, PARAMETER_VALUE, PARAMETER_CLOSE, FUNCTION_CLOSE,
)
# Words the chat template itself writes, plus common punctuation.
TEMPLATE_TEXT = "system\nuser\nassistant\ntool\n\n# Tools\n. , : ; ? ! ' \" ( ) -"
CHAT_TEMPLATE_FILE = Path(__file__).with_name("chat_template.jinja")


def chat_template() -> str:
    return CHAT_TEMPLATE_FILE.read_text()


def vocab_tokens(vocab_size: int, script: Script | None) -> list[str]:
    """All token strings in id order; raises ValueError if vocab_size is too small."""
    fixed = [*SPECIAL_TOKENS, *MODE_TOKENS.values(), *MARKUP_TOKENS]
    words = _pre_tokens(TEMPLATE_TEXT)
    if script is not None:
        for reply in script.replies.values():
            words += _pre_tokens(_script_words_text(reply))
    tokens = list(dict.fromkeys(fixed + words))
    if len(tokens) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} is too small: the fixed tokens and script words "
                         f"need {len(tokens)}")
    seen = set(tokens)
    for filler in _filler_words():
        if len(tokens) == vocab_size:
            break
        if filler not in seen:
            tokens.append(filler)
    return tokens


def build_tokenizer(tokens: list[str]):
    """The `tokenizers.Tokenizer` over `tokens` (ids = list positions)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(tokens)}, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [*SPECIAL_TOKENS, *MODE_TOKENS.values()]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    return tokenizer


def tokenizer_config(max_length: int) -> dict:
    """tokenizer_config.json: special token roles and the chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": chat_template(),
    }


def _script_words_text(reply) -> str:
    """The reply text with markup tokens replaced by newlines, so only words are pre-tokenized."""
    text = reply.output_text()
    for markup in sorted(MARKUP_TOKENS, key=len, reverse=True):
        text = text.replace(markup, "\n")
    return text


def _pre_tokens(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    splitter = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return [piece for piece, _ in splitter.pre_tokenize_str(text)]


def _filler_words():
    """Pronounceable space-led pseudo-words ('Ġbado', ...), deterministic, letters only."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    syllables = [c + v for c in consonants for v in vowels]
    for first in syllables:
        for second in syllables:
            yield "Ġ" + first + second
