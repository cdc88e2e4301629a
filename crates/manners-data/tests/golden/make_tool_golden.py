#!/usr/bin/env python3
"""Golden ids + assistant masks for conversations with tool calls, tool results and reasoning
traces, computed by transformers (`apply_chat_template(..., tools=...,
return_assistant_tokens_mask=True)`) independently of the Rust code under test.

    /work/venv/bin/python crates/manners-data/tests/golden/make_tool_golden.py [TRL_TEMPLATES_DIR]

writes tool_golden.json next to this script. Two templates:

- `chatml-tools`: manners' built-in Hermes-style format, written here by hand as a Jinja
  template from the documented frame (crates/manners-data/src/template/mod.rs): tools in the
  system turn as Qwen2.5 words it, `<think>` reasoning, `<tool_call>{json}</tool_call>` calls,
  results in `tool` turns; `{% generation %}` around the assistant's reasoning, content, calls
  and `<|im_end|>`.
- `qwen3`, `qwen2_5`, `gptoss`: the training templates of Hugging Face TRL
  (trl/chat_templates/<name>_training.jinja, Apache-2.0: the models' own templates, Apache-2.0,
  with `{% generation %}` markers), read from the folder given (default /tmp/trl_templates, from
  `git show HEAD:trl/chat_templates/...` of a TRL checkout) and stored in the JSON.

Tokenizer: GPT-2 (assets/gpt2-tokenizer) plus `<|im_start|>` 50257, `<|im_end|>` 50258 as
special tokens, as the Rust tests build it, plus the template's other `<|...|>` strings as
special tokens in order of appearance (what manners adds before training). Each record is stored as JSON text (the key order
of arguments and schemas matters to the render) and read by manners' own reader.
"""
import json
import os
import re
import sys

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "..", "..", "..", "..", "assets", "gpt2-tokenizer")

CHATML_TOOLS = (
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages[0]['role'] == 'system' -%}{{- messages[0]['content'] + '\\n\\n' -}}{%- endif -%}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}"
    "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{%- if not (tools and loop.first and m['role'] == 'system') -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' -}}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- generation -%}"
    "{%- if m.get('reasoning_content') -%}{{- '<think>\\n' + m['reasoning_content'] + '\\n</think>\\n\\n' -}}{%- endif -%}"
    "{{- m['content'] -}}"
    "{%- for c in m.get('tool_calls', []) -%}"
    "{%- if not loop.first or m['content'] -%}{{- '\\n' -}}{%- endif -%}"
    "{{- '<tool_call>\\n' + ({'name': c['function']['name'], 'arguments': c['function']['arguments']} | tojson) + '\\n</tool_call>' -}}"
    "{%- endfor -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{%- elif m['role'] == 'tool' -%}"
    "{{- '<tool_response>\\n' + m['content'] + '\\n</tool_response><|im_end|>' -}}"
    "{%- else -%}{{- m['content'] + '<|im_end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look up a fact about an entity.",
        "parameters": {
            "type": "object",
            "properties": {"entity": {"type": "string"}, "field": {"type": "string"}},
            "required": ["entity", "field"],
        },
    },
}


def call(id_, name, args):
    # Arguments as a dict, keys deliberately out of sorted order.
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


RECORDS = [
    # One call, its result, the answer; a system prompt next to the tools.
    {
        "tools": [WEATHER],
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call("call_1", "get_weather", {"unit": "celsius", "city": "Paris"})]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 18, \"sky\": \"clear\"}"},
            {"role": "assistant", "content": "It is 18 degrees and clear in Paris."},
        ],
    },
    # Two calls in one turn (with text before them), two results, then a plain exchange.
    {
        "tools": [WEATHER, TIME],
        "messages": [
            {"role": "user", "content": "Weather and time in Tokyo?"},
            {
                "role": "assistant",
                "content": "Let me check both.",
                "tool_calls": [
                    call("call_a", "get_weather", {"city": "Tokyo"}),
                    call("call_b", "get_time", {"city": "Tokyo"}),
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "rain, 12 C"},
            {"role": "tool", "tool_call_id": "call_b", "content": "21:04"},
            {"role": "assistant", "content": "It is 21:04 in Tokyo, raining at 12 C."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You're welcome."},
        ],
    },
    # Reasoning traces, one turn without tools, one that calls a tool after thinking.
    {
        "tools": [LOOKUP],
        "messages": [
            {"role": "user", "content": "What is 17 times 3?"},
            {"role": "assistant", "reasoning_content": "17 * 3 = 51.", "content": "51."},
            {"role": "user", "content": "What is the capital of Peru?"},
            {
                "role": "assistant",
                "reasoning_content": "I should look it up.",
                "content": "",
                "tool_calls": [call("c1", "lookup", {"field": "capital", "entity": "Peru"})],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "Lima"},
            {"role": "assistant", "reasoning_content": "The tool says Lima.", "content": "The capital of Peru is Lima."},
        ],
    },
]


def gpt2():
    tok = Tokenizer(models.BPE.from_file(os.path.join(ASSETS, "vocab.json"), os.path.join(ASSETS, "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True) for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


# Real training templates with tool support and a permissive licence (TRL's
# trl/chat_templates/*_training.jinja, Apache-2.0, from the models' own templates: Qwen
# Apache-2.0, gpt-oss Apache-2.0), stored in the JSON.
REAL = ["qwen3", "qwen2_5", "gptoss"]


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "/tmp/trl_templates"
    templates = {"chatml-tools": CHATML_TOOLS}
    for name in REAL:
        src = open(os.path.join(folder, f"{name}_training.jinja")).read()
        # gpt-oss writes today's date: pinned, so the golden holds tomorrow too.
        templates[name] = src.replace('strftime_now("%Y-%m-%d")', '"2026-12-03"')
    cases = []
    for name, src in templates.items():
        # As manners trains: the `<|...|>` strings a template writes become special tokens
        # (appended in order of appearance; gpt-oss's <|start|>, <|message|>, <|end|>, ...).
        tok = gpt2()
        assert tok.convert_tokens_to_ids("<|im_end|>") == 50258
        pipes = []
        for t in re.findall(r"<\|([^\s'\"<>]{1,60}?)\|>", src):
            if f"<|{t}|>" not in pipes:
                pipes.append(f"<|{t}|>")
        new = [p for p in pipes if p not in tok.get_vocab()]
        if new:
            tok.add_special_tokens({"additional_special_tokens": new})
        for rec in RECORDS:
            out = tok.apply_chat_template(
                rec["messages"],
                tools=rec["tools"],
                chat_template=src,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            text = tok.apply_chat_template(rec["messages"], tools=rec["tools"], chat_template=src, tokenize=False)
            last = max(i for i, m in enumerate(rec["messages"]) if m["role"] == "assistant")
            prompt = tok.apply_chat_template(
                rec["messages"][:last], tools=rec["tools"], chat_template=src, tokenize=True,
                add_generation_prompt=True, return_dict=True,
            )["input_ids"]
            if name == "chatml-tools":
                # manners' exported Jinja (to_jinja, committed next to this script) gives the
                # same ids and masks under transformers.
                exported = open(os.path.join(HERE, "exported_chatml-tools.jinja")).read()
                twin = tok.apply_chat_template(
                    rec["messages"], tools=rec["tools"], chat_template=exported, tokenize=True,
                    return_dict=True, return_assistant_tokens_mask=True,
                )
                assert twin["input_ids"] == out["input_ids"], "exported chatml-tools ids differ"
                assert twin["assistant_masks"] == out["assistant_masks"], "exported chatml-tools masks differ"
            cases.append({
                "template": name,
                "source": None if name == "chatml-tools" else src,
                "record": json.dumps(rec, ensure_ascii=False),
                "text": text,
                "ids": out["input_ids"],
                "mask": [bool(x) for x in out["assistant_masks"]],
                "prompt": prompt,
            })
    with open(os.path.join(HERE, "tool_golden.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases; exported chatml-tools equals the hand-written one")


if __name__ == "__main__":
    main()
