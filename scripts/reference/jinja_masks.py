#!/usr/bin/env python3
"""Supervised spans of chat templates as transformers computes them, beside manners'.

For every `*.jinja` file in TEMPLATE_DIR and every conversation (OpenAI `messages` JSONL) in
CONVS, renders the conversation with transformers' `render_jinja_template(...,
return_assistant_tokens_mask=True)` (the `{% generation %}` spans, in characters) and runs
`manners data inspect --json` on the same conversation and template; manners' supervised
tokens are mapped back to characters (each token decoded with the same tokenizer). Prints one
line per template: agree / differ (first difference) / error on either side.

    /work/venv/bin/python scripts/reference/jinja_masks.py TEMPLATE_DIR CONVS.jsonl [MANNERS_BIN]

The templates are not committed (use your model's own, or e.g. TRL's `trl/chat_templates/*_training.jinja`).
"""
import glob
import json
import os
import subprocess
import sys

from tokenizers import Tokenizer
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOK_PATH = os.path.join(ROOT, "assets", "base", "tokenizer.json")


def hf_spans(template, messages, tools):
    rendered, gen = render_jinja_template(
        [messages],
        tools=tools,
        chat_template=template,
        return_assistant_tokens_mask=True,
        # The shipped base model's specials, as manners passes them: no BOS, EOS <|endoftext|>.
        bos_token="",
        eos_token="<|endoftext|>",
    )
    return rendered[0], gen[0]


def chars(spans, n):
    out = [False] * n
    for s, e in spans:
        for i in range(s, min(e, n)):
            out[i] = True
    return out


def byte_decoder():
    """GPT-2's byte-level alphabet, reversed: token characters to bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


BYTES = byte_decoder()


def manners_chars(rec, tok):
    """manners' supervised flags per character of its render: each token's bytes (byte-level
    pieces mapped back, added tokens as their text), a character supervised when its first
    byte is."""
    data = bytearray()
    flags = []
    for tid, piece, s in zip(rec["ids"], rec["tokens"], rec["supervised"]):
        if all(ch in BYTES for ch in piece) and tok.token_to_id(piece) is not None and not tok.get_added_tokens_decoder().get(tid):
            b = bytes(BYTES[ch] for ch in piece)
        else:
            b = piece.encode()
        data += b
        flags.extend([s] * len(b))
    text = data.decode("utf-8", errors="replace")
    out = []
    at = 0
    for ch in text:
        out.append(flags[at] if at < len(flags) else False)
        at += len(ch.encode())
    return text, out


def main():
    tdir, convs = sys.argv[1], sys.argv[2]
    binary = sys.argv[3] if len(sys.argv) > 3 else os.path.join(
        os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "manners")
    tok = Tokenizer.from_file(TOK_PATH)
    records = [json.loads(l) for l in open(convs) if l.strip()]
    agree = 0
    total = 0
    for path in sorted(glob.glob(os.path.join(tdir, "*.jinja"))):
        name = os.path.basename(path)
        template = open(path).read()
        total += 1
        verdict = "agree"
        for line, rec in enumerate(records, 1):
            try:
                text, gen = hf_spans(template, rec["messages"], rec.get("tools"))
            except Exception as e:  # noqa: BLE001
                hf_err = f"{type(e).__name__}: {e}"
                text = None
            one = os.path.join("/tmp", f"jinja_masks_{os.getpid()}.jsonl")
            with open(one, "w") as f:
                f.write(json.dumps(rec) + "\n")
            p = subprocess.run([binary, "data", "inspect", one, "--template", path, "--json"],
                               capture_output=True, text=True)
            if text is None and p.returncode != 0:
                continue  # both refuse
            if text is None:
                verdict = f"line {line}: transformers fails ({hf_err[:80]}), manners renders"
                break
            if p.returncode != 0:
                verdict = f"line {line}: manners fails: {p.stderr.strip()[:150]}"
                break
            ours = json.loads(p.stdout.splitlines()[0])
            if ours["text"] != text:
                verdict = f"line {line}: rendered texts differ"
                break
            want = chars(gen, len(text))
            _, got = manners_chars(ours, tok)
            if len(got) != len(want):
                verdict = f"line {line}: token texts do not cover the render ({len(got)} vs {len(want)} chars)"
                break
            if got != want:
                i = next(i for i in range(len(want)) if got[i] != want[i])
                verdict = (f"line {line}: supervised chars differ at {i} "
                           f"(transformers {want[i]}, manners {got[i]}): {text[max(0, i - 30):i]!r}|{text[i:i + 30]!r}")
                break
        if verdict == "agree":
            agree += 1
        print(f"{name:45s} {verdict}")
    print(f"\n{agree} of {total} templates: manners' supervised characters equal transformers' on {len(records)} conversations")


if __name__ == "__main__":
    main()
