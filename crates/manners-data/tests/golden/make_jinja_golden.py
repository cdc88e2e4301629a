#!/usr/bin/env python3
"""Golden renders and supervised character spans of Jinja chat templates, computed by
transformers (`render_jinja_template(..., return_assistant_tokens_mask=True)`, the
`{% generation %}` spans) independently of the Rust code under test.

    /work/venv/bin/python crates/manners-data/tests/golden/make_jinja_golden.py

writes jinja_golden.json next to this script. The templates are small ones written for these
tests, each with one feature real training templates have (TRL's Phi-3, DeepSeek and Nemotron
training templates, which manners refused before): two `{% generation %}` blocks per assistant
turn, reasoning dropped from earlier assistant turns (so a turn's prompt is not a prefix of the
full render), and a `tools is iterable and tools | length > 0` guard with no tools; and TRL's Phi-3 and
DeepSeek-V3 training templates themselves (`make_jinja_golden.py [TRL_TEMPLATES_DIR]`). Also
`tojson` outputs of Python's json.dumps for the tojson filter test.
"""
import json
import os

from transformers.utils.chat_template_utils import render_jinja_template

HERE = os.path.dirname(os.path.abspath(__file__))

TEMPLATES = {
    # Content and end-of-turn marked apart (Phi-3 style): two blocks per assistant turn.
    "two_blocks": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% generation %}<|im_end|>{% endgeneration %}\n"
        "{% else %}{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Reasoning dropped from every assistant turn but the last one (DeepSeek-R1 style): the
    # prompt for the last turn keeps the previous turn's reasoning, the full render drops it.
    "drop_reasoning": (
        "{% set ns = namespace(last=-1) %}{% for m in messages %}"
        "{% if m.role == 'assistant' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
        "{% for m in messages %}{% set content = m.content %}"
        "{% if m.role == 'assistant' and loop.index0 != ns.last and '</think>' in content %}"
        "{% set content = content.split('</think>')[-1].lstrip() %}{% endif %}"
        "<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}{% generation %}{{ content }}<|im_end|>{% endgeneration %}\n"
        "{% else %}{{ content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Tools guard as Nemotron's templates write it (tools is none when a record has none).
    "tools_guard": (
        "{% if tools is iterable and tools | length > 0 %}<|im_start|>system\nTools: "
        "{{ tools | tojson }}<|im_end|>\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}\n"
        "{% else %}{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\nIt is 4."},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "<think>\nThree and three.\n</think>\n\nIt is 6."},
    ],
]

# Keys in sorted order except under sort_keys: manners' maps do not keep insertion order yet.
TOJSON = [
    ({"args": {"city": "Zürich", "n": [1, 2.5, None, True]}, "name": "lookup", "q": "a\"b\\c\n<tag>"}, {}),
    ({"args": {"city": "Zürich", "n": [1, 2.5, None, True]}, "name": "lookup"}, {"ensure_ascii": True}),
    ({"b": 1, "a": [], "c": {}}, {"sort_keys": True}),
    ({"a": [1, {"x": 2}], "b": 1}, {"indent": 2}),
    ({"a": [1, 2], "b": 1}, {"separators": [",", ":"]}),
]


# Real training templates with permissive licences (TRL's trl/chat_templates/*_training.jinja,
# Apache-2.0, from Phi-3's (MIT) and DeepSeek-V3's (MIT) own templates), read from the folder
# given as the first argument (default /tmp/trl_templates) and stored in the JSON.
REAL = ["phi3", "deepseekv3"]


def main():
    import sys
    folder = sys.argv[1] if len(sys.argv) > 1 else "/tmp/trl_templates"
    for name in REAL:
        TEMPLATES[name] = open(os.path.join(folder, f"{name}_training.jinja")).read()
    cases = []
    for name, src in TEMPLATES.items():
        for msgs in CONVERSATIONS:
            rendered, gen = render_jinja_template(
                [msgs], chat_template=src, return_assistant_tokens_mask=True,
                bos_token="", eos_token="<|endoftext|>",
            )
            cases.append({"template": name, "source": src, "messages": msgs,
                          "text": rendered[0], "spans": [list(s) for s in gen[0]]})
    tojson = []
    for value, kw in TOJSON:
        kws = dict(kw)
        if "separators" in kws:
            kws["separators"] = tuple(kws["separators"])
        tojson.append({"value": value, "kwargs": kw,
                       "json": json.dumps(value, ensure_ascii=kws.pop("ensure_ascii", False), **kws)})
    with open(os.path.join(HERE, "jinja_golden.json"), "w") as f:
        json.dump({"cases": cases, "tojson": tojson}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(cases)} cases, {len(tojson)} tojson values")


if __name__ == "__main__":
    main()
