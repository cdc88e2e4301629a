#!/usr/bin/env python3
"""Checks `manners export --format gguf` against llama.cpp itself (llama-cpp-python).

    python3 scripts/reference/check_gguf.py --run RUN_OR_MODEL_DIR \
        [--manners target/release/manners] [--questions assets/sft/heldout.jsonl] \
        [--limit N] [--out docs/gguf-check/check-NAME.json]

For the model folder (a run's final/), in f32, f16 and q8_0:
1. llama.cpp loads the file; its tokenizer gives manners' ids for a few texts.
2. Logits of the last positions of a prompt against `manners logits` (llama.cpp with an f32
   KV cache; its default f16 cache alone moves logits by ~1e-3).
3. Greedy continuation of raw text, token for token against `manners generate --json`.
4. For every held-out question: manners' greedy answer with the model's chat template
   (`manners generate --chat --json`) against llama.cpp's greedy answer from the same prompt ids,
   stopping where llama.cpp stops (its end-of-generation tokens come from the file): the share
   of identical answers.
5. llama.cpp's own chat completion, with the template embedded in the file, answers held-out
   questions and stops at the end-of-turn token: the share that stop, and that name the
   reference answer.

Needs llama-cpp-python. CI never runs it; its outputs are committed in docs/gguf-check/.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import llama_cpp
import numpy as np
from llama_cpp import Llama

TEXTS = [
    "The capital of France is Paris. It was",
    "It is a truth universally acknowledged, that a single man in possession",
    "Count to 3.",
]


def run(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def load(path, n_ctx):
    return Llama(model_path=path, n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2,
                 type_k=0, type_v=0, flash_attn=False)


def greedy(llm, prompt, n, stop_at_eog):
    out = []
    for tok in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if stop_at_eog and llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        out.append(tok)
        if len(out) >= n:
            break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--manners", default="target/release/manners")
    ap.add_argument("--questions", default="assets/sft/heldout.jsonl")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--chat-limit", type=int, default=40)
    ap.add_argument("--no-chat", action="store_true",
                    help="skip 4-5 (a model whose tokenizer lacks its template's tokens)")
    ap.add_argument("--out")
    a = ap.parse_args()
    model_dir = os.path.join(a.run, "final") if os.path.isdir(os.path.join(a.run, "final")) else a.run
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    n_ctx = cfg.get("n_positions") or cfg.get("max_position_embeddings")
    questions = [json.loads(l) for l in open(a.questions) if l.strip()]
    facts_path = os.path.join(os.path.dirname(a.questions), "heldout_facts.jsonl")
    facts = [json.loads(l) for l in open(facts_path)] if os.path.exists(facts_path) else None
    if a.limit:
        questions = questions[: a.limit]
    users = [next(m["content"] for m in q["messages"] if m["role"] == "user") for q in questions]
    budget = min(48, n_ctx // 3)

    # manners' own answers (the reference for every dtype).
    ours = [] if a.no_chat else [
        json.loads(run([a.manners, "generate", "--backend", "flex", "--model", model_dir, "--chat", u,
                        "--json", "--max-new-tokens", str(budget)])) for u in users]
    result = {"model": model_dir, "questions": len(users), "dtypes": {}}
    tmp = tempfile.mkdtemp()
    ok = True
    for dtype in ("f32", "f16", "q8_0"):
        path = os.path.join(tmp, f"model-{dtype}.gguf")
        run([a.manners, "export", "--format", "gguf", "--dtype", dtype, "--run", model_dir, "--out", path])
        llm = load(path, n_ctx)
        r = {"bytes": os.path.getsize(path)}
        # 1-2. tokenizer and logits
        worst, same_tokens = 0.0, True
        for text in TEXTS:
            lg = json.loads(run([a.manners, "logits", "--backend", "flex", "--model", model_dir,
                                 "--prompt", text, "--positions", "4"]))
            same_tokens &= llm.tokenize(text.encode(), add_bos=False, special=True) == lg["ids"]
            llm.reset()
            llm.eval(lg["ids"])
            sc = np.array(llm.scores[: len(lg["ids"])])[lg["first_position"]:, : lg["vocab"]]
            worst = max(worst, float(np.abs(sc - np.array(lg["logits"])).max()))
        r["tokenizer_ids_equal"] = bool(same_tokens)
        r["max_logit_diff"] = worst
        # 3. greedy continuation of raw text
        g = json.loads(run([a.manners, "generate", "--backend", "flex", "--model", model_dir, "--prompt",
                            TEXTS[1], "--json", "--max-new-tokens", "24", "--ignore-eos"]))
        r["raw_greedy_equal"] = greedy(llm, g["prompt_ids"], 24, False) == g["ids"]
        result["dtypes"][dtype] = r
        if a.no_chat:
            print(dtype, json.dumps(r))
            ok &= r["tokenizer_ids_equal"] and (r["raw_greedy_equal"] or dtype == "q8_0")
            continue
        # 4. greedy answers to the held-out questions
        agree = sum(greedy(llm, o["prompt_ids"], budget, True) == o["ids"] for o in ours)
        r["answer_agreement"] = agree / len(ours)
        # 5. llama.cpp's own chat completion with the embedded template
        stopped, correct, example = 0, 0, None
        n_chat = min(a.chat_limit, len(users))
        for i, u in enumerate(users[:n_chat]):
            c = llm.create_chat_completion(messages=[{"role": "user", "content": u}], max_tokens=budget,
                                           temperature=0.0, top_k=1, repeat_penalty=1.0)
            text = c["choices"][0]["message"]["content"]
            stopped += c["choices"][0]["finish_reason"] == "stop"
            if facts:
                correct += facts[i]["answer"].lower() in text.lower()
            if example is None:
                example = {"question": u, "answer": text, "finish_reason": c["choices"][0]["finish_reason"]}
        r["chat_completions"] = n_chat
        r["chat_stop_rate"] = stopped / n_chat
        if facts:
            r["chat_answer_contains_reference"] = correct / n_chat
        r["chat_example"] = example
        print(dtype, json.dumps({k: v for k, v in r.items() if k != "chat_example"}))
        ok &= r["tokenizer_ids_equal"] and r["chat_stop_rate"] > 0.9
        if dtype != "q8_0":
            ok &= r["raw_greedy_equal"] and r["answer_agreement"] >= 0.95
        else:
            ok &= r["answer_agreement"] >= 0.95
    result["ok"] = bool(ok)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
