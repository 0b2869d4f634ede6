"""Usage: VLLM_PYTHON reproduce.py VLLM_SOURCE_DIR (a folder holding vllm/, put first on sys.path).
Drive vLLM's streaming chat parser (reasoning nemotron_v3 + tools qwen3_coder) the way serving does,
with deltas of several tokens (speculative decoding) and EOS in the last delta."""
import sys
sys.path.insert(0, sys.argv[1])
import vllm
from transformers import AutoTokenizer
from vllm.parser.parser_manager import ParserManager
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
tok = AutoTokenizer.from_pretrained("/root/.cache/servegate/models/tiny-scripted")
msgs = [{"role": "user", "content": "Please greet me."}]
kw = {"enable_thinking": False}
prompt_ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, **kw)
if isinstance(prompt_ids, dict): prompt_ids = prompt_ids["input_ids"]
req = ChatCompletionRequest(model="m", messages=msgs, stream=True, chat_template_kwargs=kw)
cls = ParserManager.get_parser(tool_parser_name="qwen3_coder", reasoning_parser_name="nemotron_v3", enable_auto_tools=True)
eos = tok.convert_tokens_to_ids("<|im_end|>")
ids = tok.encode("Thinking is off, so here comes a direct answer.", add_special_tokens=False)
for per_step in (1, 4):
    p = cls(tok, None, chat_template_kwargs=kw)
    steps = [ids[i:i + per_step] for i in range(0, len(ids), per_step)]
    if per_step == 1: steps.append([eos])
    else: steps[-1] = steps[-1] + [eos]
    out = ""
    for n, step in enumerate(steps):
        d = p.parse_delta(tok.decode([t for t in step if t != eos]), step, req, prompt_ids, finished=n == len(steps) - 1)
        if d is not None and d.content: out += d.content
    print(vllm.__file__.split("/site-packages")[0][-30:], f"{per_step} token(s)/step:", repr(out))
