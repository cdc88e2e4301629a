#!/usr/bin/env python3
"""Reference values for the manners learner, from PyTorch: masked SFT loss, global gradient
norm, and three AdamW steps with global-norm clipping, on the tiny GPT-2 fixture.

Run from the repository root after scripts/reference/tiny_gpt2.py:

    python3 scripts/reference/sft_step.py

Writes crates/manners-train/tests/fixtures/sft-step-reference.json (committed; CI never runs
Python). The batch has two rows with a loss mask that covers parts of each row (the
"assistant" spans) and leaves the rest (prompt, padding) out, so the masked mean differs from
the plain mean.
"""
import json
import os

import torch
from transformers import GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "crates/manners-model/tests/fixtures/tiny-gpt2")
OUT = os.path.join(ROOT, "crates/manners-train/tests/fixtures/sft-step-reference.json")

torch.manual_seed(0)
torch.set_num_threads(1)
model = GPT2LMHeadModel.from_pretrained(MODEL, attn_implementation="eager").float()
model.train()  # dropout is 0 in the fixture config

T = 16
g = torch.Generator().manual_seed(7)
inputs = torch.randint(1, 500, (2, T), generator=g)
targets = torch.randint(1, 500, (2, T), generator=g)
mask = torch.zeros(2, T)
mask[0, 5:12] = 1.0   # row 0: an assistant span in the middle
mask[1, 2:4] = 1.0    # row 1: two short spans
mask[1, 9:16] = 1.0

LR, WD, CLIP = 1e-2, 0.1, 1.0
decay = [p for n, p in model.named_parameters() if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))]
no_decay = [p for n, p in model.named_parameters() if not n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LR, betas=(0.9, 0.999), eps=1e-8,
)


def masked_loss():
    logits = model(inputs).logits  # [2, T, V]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    m = mask.reshape(-1)
    return (ce * m).sum() / m.sum()


losses, norms = [], []
for step in range(3):
    opt.zero_grad()
    loss = masked_loss()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    losses.append(loss.item())
    norms.append(norm.item())
    opt.step()
with torch.no_grad():
    final = masked_loss().item()

ref = {
    "generator": f"torch {torch.__version__}",
    "inputs": inputs.tolist(),
    "targets": targets.tolist(),
    "mask": mask.tolist(),
    "lr": LR,
    "weight_decay": WD,
    "clip": CLIP,
    "losses": losses,
    "grad_norms": norms,
    "loss_after_3_steps": final,
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(ref, f, indent=1)
print(json.dumps({k: ref[k] for k in ("losses", "grad_norms", "loss_after_3_steps")}))
