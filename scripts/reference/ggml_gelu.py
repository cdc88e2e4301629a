#!/usr/bin/env python3
"""Why a GPT-2 GGUF's logits in llama.cpp differ from transformers' by ~1e-3: ggml's GELU.

    python3 scripts/reference/ggml_gelu.py --model RUN/final [--manners target/release/manners] \
        [--out docs/gguf-check/gelu-default-run.json]

ggml's CPU backend (GGML_GELU_FP16, on by default) computes GELU by rounding the input to f16 and
reading a 65,536-entry table of f16 results (inputs beyond +-10 pass through or go to 0). This
script exports the model with manners (f32 GGUF), runs three prompts (last four positions) through llama.cpp, through
transformers' GPT-2 as it is (tanh GELU in f32), and through the same transformers model with
its GELU replaced by that table, and reports the largest logit difference of each pair, and of
manners (`manners logits`) against transformers. Needs torch, transformers, llama-cpp-python.
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
import torch
from llama_cpp import Llama
from transformers import GPT2LMHeadModel

TEXTS = [
    "The capital of France is Paris. It was",
    "It is a truth universally acknowledged, that a single man in possession",
    "Count to 3.",
]


def tanh_gelu(x):
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))


# ggml_table_gelu_f16[i] = fp16(gelu(f32(fp16 bits i))), in f32 as ggml computes it.
_BITS = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
with np.errstate(all="ignore"):
    _TABLE = tanh_gelu(_BITS.view(np.float16).astype(np.float32)).astype(np.float16)


def ggml_gelu(x: torch.Tensor) -> torch.Tensor:
    a = x.detach().cpu().numpy().astype(np.float32)
    idx = a.astype(np.float16).view(np.uint16)
    y = _TABLE[idx].astype(np.float32)
    y = np.where(a <= -10.0, 0.0, np.where(a >= 10.0, a, y)).astype(np.float32)
    return torch.from_numpy(y)


class GgmlGelu(torch.nn.Module):
    def forward(self, x):
        return ggml_gelu(x)


def logits(model, ids, first):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, first:].numpy().astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--manners", default="target/release/manners")
    ap.add_argument("--out")
    a = ap.parse_args()

    path = os.path.join(tempfile.mkdtemp(), "model-f32.gguf")
    subprocess.run([a.manners, "export", "--format", "gguf", "--dtype", "f32", "--run", a.model,
                    "--out", path], check=True, capture_output=True)
    llm = Llama(model_path=path, n_ctx=256, logits_all=True, verbose=False, n_threads=2,
                type_k=0, type_v=0, flash_attn=False)
    hf = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    emulated = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    for block in emulated.transformer.h:
        block.mlp.act = GgmlGelu()

    worst = {"llama_cpp_vs_transformers": 0.0, "llama_cpp_vs_transformers_with_ggml_gelu": 0.0,
             "manners_vs_transformers": 0.0}
    for text in TEXTS:
        lg = json.loads(subprocess.run(
            [a.manners, "logits", "--backend", "flex", "--model", a.model, "--prompt", text,
             "--positions", "4"], check=True, capture_output=True, text=True).stdout)
        ids, v, first = lg["ids"], lg["vocab"], lg["first_position"]
        llm.reset()
        llm.eval(ids)
        ours = np.asarray(llm.scores[first:len(ids), :v], dtype=np.float64)
        ref = logits(hf, ids, first)[:, :v]
        emu = logits(emulated, ids, first)[:, :v]
        mine = np.asarray(lg["logits"], dtype=np.float64)[:, :v]
        worst["llama_cpp_vs_transformers"] = max(worst["llama_cpp_vs_transformers"],
                                                 float(np.abs(ours - ref).max()))
        worst["llama_cpp_vs_transformers_with_ggml_gelu"] = max(
            worst["llama_cpp_vs_transformers_with_ggml_gelu"], float(np.abs(ours - emu).max()))
        worst["manners_vs_transformers"] = max(worst["manners_vs_transformers"],
                                               float(np.abs(mine - ref).max()))
    result = {"model": a.model, "texts": len(TEXTS), "max_logit_diff": worst}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
