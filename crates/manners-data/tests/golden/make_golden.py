#!/usr/bin/env python3
"""Golden ids + loss masks for the built-in chat templates of manners-data, computed with
Hugging Face `tokenizers` (Python), independently of the Rust code under test.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install tokenizers
    /tmp/venv/bin/python crates/manners-data/tests/golden/make_golden.py

writes golden.json next to this script. The frames are the ones documented in
crates/manners-data/src/template/mod.rs (and the crate README):

  chatml: [<bos>] <|im_start|>{role}\\n{content}<|im_end|>\\n ...
          supervised: assistant content + <|im_end|>
  plain:  [<bos>] System: {c}\\n User: {c}\\n Assistant: {c}<eos>\\n
          supervised: " " + assistant content + <eos>
  llama2: <bos>[INST] [<<SYS>>\\n{system}\\n<</SYS>>\\n\\n]{user} [/INST] {c} <eos> ...
          supervised: " " + assistant content + " " + <eos>

Tokenization: segment by segment, add_special_tokens=False; template text may contain special
tokens (split out by the tokenizer); message contents are encoded with
encode_special_tokens=True so marker-like text stays text; a single space between a label
and the content is tokenized with the content.
"""
import json
import os

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "..", "..", "..", "..", "assets", "gpt2-tokenizer")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"]


def gpt2():
    tok = Tokenizer(
        models.BPE.from_file(os.path.join(ASSETS, "vocab.json"), os.path.join(ASSETS, "merges.txt"))
    )
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    return tok


TOK = gpt2()
TEXT_TOK = gpt2()
TEXT_TOK.encode_special_tokens = True
assert TOK.encode("Hello world<|endoftext|>", add_special_tokens=False).ids == [15496, 995, 50256]
assert [TOK.token_to_id(s) for s in SPECIALS] == [50256, 50257, 50258, 50259, 50260]


def trains(mode, msgs, i):
    m = msgs[i]
    if m.get("train") is not None:
        return m["train"]
    if mode == "all":
        return True
    if mode == "assistant":
        return m["role"] == "assistant"
    # last
    return m["role"] == "assistant" and all(x["role"] != "assistant" for x in msgs[i + 1:])


def segments(template, specials, msgs, mode, prompt):
    """[(text, kind, train)] with kind in S (one special token), F (frame), C (content)."""
    al = mode == "all"
    out = []
    bos, eos = specials.get("bos"), specials.get("eos")
    if template == "chatml":
        if bos:
            out.append((bos, "S", al))
        for i, m in enumerate(msgs):
            t = trains(mode, msgs, i)
            out += [("<|im_start|>", "S", al), (m["role"] + "\n", "F", al),
                    (m["content"], "C", t), ("<|im_end|>", "S", t), ("\n", "F", al)]
        if prompt:
            out += [("<|im_start|>", "S", False), ("assistant\n", "F", False)]
    elif template == "plain":
        if bos:
            out.append((bos, "S", al))
        labels = {"system": "System:", "user": "User:", "assistant": "Assistant:"}
        for i, m in enumerate(msgs):
            t = trains(mode, msgs, i)
            out += [(labels[m["role"]], "F", al), (" " + m["content"], "C", t)]
            if m["role"] == "assistant":
                out += [(eos, "S", t), ("\n", "F", al)]
            else:
                out.append(("\n", "F", t))
        if prompt:
            out.append(("Assistant:", "F", False))
    elif template == "llama2":
        start = 1 if msgs and msgs[0]["role"] == "system" else 0
        for i in range(start, len(msgs)):
            m = msgs[i]
            t = trains(mode, msgs, i)
            if m["role"] == "user":
                out.append((bos, "S", al))
                if i == start and start == 1:
                    # The blank line before the user's words is tokenized with them (as the full
                    # string is: "\n\nWord" splits "\n", "\n", "Word"; "\n\n" alone is one token).
                    out += [("[INST] <<SYS>>\n", "F", al), (msgs[0]["content"], "C", trains(mode, msgs, 0)),
                            ("\n<</SYS>>", "F", al), ("\n\n" + m["content"], "C", t)]
                else:
                    out += [("[INST]", "F", al), (" " + m["content"], "C", t)]
                out.append((" [/INST]", "F", t))
            else:
                out += [(" " + m["content"], "C", t), (" ", "F", t), (eos, "S", t)]
    else:
        raise ValueError(template)
    return out


def encode(segs):
    ids, mask = [], []
    for text, kind, train in segs:
        if kind == "S":
            new = [TOK.token_to_id(text)]
        elif kind == "F":
            new = TOK.encode(text, add_special_tokens=False).ids if text else []
        else:
            new = TEXT_TOK.encode(text, add_special_tokens=False).ids if text else []
        ids += new
        mask += [train] * len(new)
    return ids, mask


SYSTEM = {"role": "system", "content": "You are terse."}
TURNS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "Paris."}],
    [{"role": "user", "content": "And of Spain?"},
     {"role": "assistant", "content": " Madrid, of course.\n"}],
    [{"role": "user", "content": "Thanks!\n\nBye <s>"},
     {"role": "assistant", "content": "Bye: <|im_end|> and </s> are just text here."}],
]
TEMPLATES = {
    "chatml": {"eos": "<|endoftext|>"},
    "plain": {"eos": "<|endoftext|>"},
    "llama2": {"bos": "<s>", "eos": "</s>"},
}

cases = []
for name, specials in TEMPLATES.items():
    for system in (False, True):
        for n in (1, 2, 3):
            msgs = ([SYSTEM] if system else []) + [m for turn in TURNS[:n] for m in turn]
            ids, mask = encode(segments(name, specials, msgs, "assistant", False))
            prompt, _ = encode(segments(name, specials, msgs[:-1], "assistant", True))
            cases.append({"template": name, "specials": specials, "mode": "assistant",
                          "messages": msgs, "ids": ids, "mask": mask, "prompt": prompt,
                          "text": TOK.decode(ids, skip_special_tokens=False)})
# chatml with a BOS token; mask modes and train flags.
msgs3 = [SYSTEM] + [m for turn in TURNS for m in turn]
extra = [
    ("chatml", {"bos": "<s>", "eos": "<|endoftext|>"}, "assistant", msgs3),
    ("chatml", {"eos": "<|endoftext|>"}, "last", msgs3),
    ("chatml", {"eos": "<|endoftext|>"}, "all", msgs3),
    ("plain", {"eos": "<|endoftext|>"}, "last", msgs3),
    ("llama2", {"bos": "<s>", "eos": "</s>"}, "all", msgs3),
]
flagged = [dict(m) for m in msgs3]
flagged[2]["train"] = False   # first assistant turn not trained
flagged[3]["train"] = True    # second user turn trained
extra += [(t, s, "assistant", flagged) for t, s in TEMPLATES.items()]
for name, specials, mode, msgs in extra:
    ids, mask = encode(segments(name, specials, msgs, mode, False))
    prompt, _ = encode(segments(name, specials, msgs[:-1], mode, True))
    cases.append({"template": name, "specials": specials, "mode": mode, "messages": msgs,
                  "ids": ids, "mask": mask, "prompt": prompt,
                  "text": TOK.decode(ids, skip_special_tokens=False)})

with open(os.path.join(HERE, "golden.json"), "w") as f:
    f.write('{"tokenizer": %s,\n "cases": [\n' % json.dumps("gpt2 + " + " ".join(SPECIALS[1:])))
    f.write(",\n".join("  " + json.dumps(c) for c in cases))
    f.write("\n]}\n")
print(f"wrote {len(cases)} cases")

# HF compatibility of ChatTemplate::to_jinja(): the exported templates (committed next to this
# script by the Rust test `exported_jinja_matches_committed_copies`) rendered with jinja2 the
# way transformers does (trim_blocks, lstrip_blocks; `{% generation %}` only marks spans) must
# give exactly the golden texts and prompts.
try:
    import re

    import jinja2
except ImportError:
    print("jinja2 not installed: exported templates not checked")
else:
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    checked = 0
    for name, specials in TEMPLATES.items():
        path = os.path.join(HERE, f"exported_{name}.jinja")
        if not os.path.exists(path):
            continue
        src = open(path).read()
        src = re.sub(r"\{%(-?)\s*generation\s*(-?)%\}", r"{%\1 if true \2%}", src)
        src = re.sub(r"\{%(-?)\s*endgeneration\s*(-?)%\}", r"{%\1 endif \2%}", src)
        tmpl = env.from_string(src)
        for c in cases:
            if c["template"] != name or c["specials"] != specials:
                continue
            kw = {"bos_token": specials.get("bos", ""), "eos_token": specials.get("eos", "")}
            text = tmpl.render(messages=c["messages"], add_generation_prompt=False, **kw)
            assert text == c["text"], (name, text, c["text"])
            prompt = tmpl.render(messages=c["messages"][:-1], add_generation_prompt=True, **kw)
            assert prompt == TOK.decode(c["prompt"], skip_special_tokens=False), (name, prompt)
            checked += 1
    print(f"exported jinja templates render the golden texts with jinja2 ({checked} cases)")
