#!/usr/bin/env python3
"""Checks a manners export against Hugging Face transformers (and PEFT for LoRA adapters).

    python3 scripts/reference/check_export.py --merged DIR [--adapter DIR --base DIR] \
        [--manners target/release/manners] [--out docs/export-check.json]

1. transformers loads the merged folder (AutoModelForCausalLM, AutoTokenizer): GPT-2, Llama,
   Qwen2 or Qwen3.
2. The tokenizer's chat_template (the Jinja template manners wrote) renders a conversation,
   as a training text and as a generation prompt; the ids must equal manners' own render.
3. The logits of the last positions must equal `manners logits` within 1e-4.
4. With --adapter: PEFT loads the LoRA adapters onto the base (resized for the added tokens,
   whose rows come from added_token_rows.safetensors) and must give the merged model's logits.

Needs torch, transformers (and peft for 4). CI never runs it; its output is committed in docs/.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

CONVERSATIONS = [
    [
        {"role": "user", "content": "Peru?"},
        {"role": "assistant", "content": "Lima."},
        {"role": "user", "content": "France?"},
        {"role": "assistant", "content": "Paris."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say  hi,\nnow."},
        {"role": "assistant", "content": "Hello!"},
    ],
]


def manners_logits(exe, model, conv, generation_prompt):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        msgs = conv[:-1] if generation_prompt else conv
        f.write(json.dumps({"messages": msgs}) + "\n")
        path = f.name
    cmd = [exe, "logits", "--backend", "flex", "--model", model, "--messages", path, "--positions", "3"]
    if generation_prompt:
        cmd.append("--generation-prompt")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    os.unlink(path)
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--merged", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--base")
    ap.add_argument("--manners", default="target/release/manners")
    ap.add_argument("--out")
    a = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(a.merged)
    # manners computes in f32 whatever the stored dtype: compare with f32 transformers.
    model = AutoModelForCausalLM.from_pretrained(a.merged, dtype=torch.float32, attn_implementation="eager").eval()
    result = {"transformers": transformers.__version__, "torch": torch.__version__, "checks": []}
    worst = 0.0
    for conv in CONVERSATIONS:
        for gen in (False, True):
            msgs = conv[:-1] if gen else conv
            hf_ids = tok.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True)
            if isinstance(hf_ids, dict) or hasattr(hf_ids, "input_ids"):
                hf_ids = hf_ids["input_ids"]
            ours = manners_logits(a.manners, a.merged, conv, gen)
            same_ids = list(hf_ids) == ours["ids"]
            with torch.no_grad():
                logits = model(torch.tensor([ours["ids"]])).logits[0]
            first = ours["first_position"]
            hf = logits[first:, : ours["vocab"]]
            diff = (hf - torch.tensor(ours["logits"])).abs().max().item()
            worst = max(worst, diff)
            result["checks"].append({"generation_prompt": gen, "tokens": len(ours["ids"]), "same_ids": same_ids, "max_logit_diff": diff})
            print(f"chat_template ids {'match' if same_ids else 'DIFFER'} ({len(ours['ids'])} tokens, generation_prompt={gen}); max |logit diff| {diff:.2e}")
            if not same_ids:
                print("  transformers:", list(hf_ids))
                print("  manners:     ", ours["ids"])
    ok = all(c["same_ids"] for c in result["checks"]) and worst < 1e-4
    if a.adapter:
        from peft import PeftModel
        from safetensors.torch import load_file

        base = AutoModelForCausalLM.from_pretrained(a.base, dtype=torch.float32, attn_implementation="eager")
        cfg = json.load(open(os.path.join(a.adapter, "adapter_config.json")))
        rows_path = os.path.join(a.adapter, "added_token_rows.safetensors")
        if os.path.exists(rows_path):
            # token_embedding.rows_from_N (wte.rows_from_N in older adapters) and, for an untied
            # head, lm_head.rows_from_N: the rows of the tokens added for the chat template.
            for key, rows in sorted(load_file(rows_path).items(), key=lambda kv: kv[0].startswith("lm_head")):
                start = int(key.rsplit("_", 1)[1])
                need = start + rows.shape[0]
                if base.get_input_embeddings().weight.shape[0] < need:
                    base.resize_token_embeddings(need)
                target = base.get_output_embeddings() if key.startswith("lm_head") else base.get_input_embeddings()
                with torch.no_grad():
                    target.weight[start:need] = rows
        peft_model = PeftModel.from_pretrained(base, a.adapter).eval()
        ids = torch.tensor([manners_logits(a.manners, a.merged, CONVERSATIONS[0], True)["ids"]])
        with torch.no_grad():
            d = (peft_model(ids).logits - model(ids).logits).abs().max().item()
        # A merged export is written in the base's dtype: with a bf16/f16 base its merged weights
        # are rounded once (PEFT adds the adapters in f32), so the two agree to that precision.
        stored = json.load(open(os.path.join(a.merged, "config.json")))
        dtype = stored.get("dtype") or stored.get("torch_dtype") or "float32"
        tol = 1e-4 if dtype == "float32" else 0.1
        result["merged_dtype"] = dtype
        result["peft_vs_merged_max_logit_diff"] = d
        result["peft_tolerance"] = tol
        print(f"PEFT adapters on the base vs the merged export ({dtype}): max |logit diff| {d:.2e} (tolerance {tol:g})")
        ok = ok and d < tol
    result["max_logit_diff"] = worst
    result["ok"] = ok
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
