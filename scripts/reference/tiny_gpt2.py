#!/usr/bin/env python3
"""Writes a tiny random GPT-2 in Hugging Face format plus reference outputs from
PyTorch + transformers, for manners' parity tests.

Run from the repository root (needs: pip install torch transformers tokenizers):

    python3 scripts/reference/tiny_gpt2.py

Writes crates/manners-model/tests/fixtures/tiny-gpt2/ (a model folder: config.json,
model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json) and
crates/manners-model/tests/fixtures/tiny-gpt2-reference.json (input ids, logits, greedy ids,
tokenizer cases). The outputs are committed; CI never runs Python.
"""
import gzip
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates/manners-model/tests/fixtures/tiny-gpt2")
REF = os.path.join(ROOT, "crates/manners-model/tests/fixtures/tiny-gpt2-reference.json")
CORPUS = os.path.join(ROOT, "../shared/data/corpus/austen.txt.gz")

torch.manual_seed(1234)
torch.set_num_threads(1)

# 1. A small byte-level BPE (GPT-2 style) trained on the start of Austen's novels.
if os.path.exists(CORPUS):
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        text = f.read(200_000)
else:
    sys.exit(f"corpus not found: {CORPUS}")
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
trainer = trainers.BpeTrainer(
    vocab_size=500,
    special_tokens=["<|endoftext|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
)
tok.train_from_iterator([text[i : i + 2000] for i in range(0, len(text), 2000)], trainer)
eot = tok.token_to_id("<|endoftext|>")
vocab = tok.get_vocab_size()

# 2. A tiny GPT-2 with every parameter random (biases and LayerNorms too, so loading a wrong
#    tensor into the wrong place cannot go unnoticed) and logits far from ties.
cfg = GPT2Config(
    vocab_size=512,  # larger than the tokenizer: like GPT-2's padded vocabularies
    n_positions=64,
    n_embd=32,
    n_layer=2,
    n_head=4,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    bos_token_id=eot,
    eos_token_id=eot,
)
model = GPT2LMHeadModel(cfg).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
            p.copy_(1.0 + 0.1 * torch.randn_like(p))
        elif name.endswith(".bias"):
            p.copy_(0.1 * torch.randn_like(p))
        else:
            p.copy_(0.2 * torch.randn_like(p))

os.makedirs(OUT, exist_ok=True)
model.save_pretrained(OUT, safe_serialization=True)
fast = PreTrainedTokenizerFast(
    tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
)
fast.model_max_length = cfg.n_positions
fast.save_pretrained(OUT)
for junk in ("special_tokens_map.json",):
    p = os.path.join(OUT, junk)
    if os.path.exists(p):
        os.remove(p)

# 3. Reference outputs.
texts = [
    "It is a truth universally acknowledged, that a single man",
    "Emma Woodhouse, handsome, clever, and rich",
]
ids = [tok.encode(t).ids for t in texts]
n = min(len(x) for x in ids)
batch = torch.tensor([x[:n] for x in ids])
with torch.no_grad():
    logits = model(batch).logits  # [2, n, 512]

prompt = torch.tensor([ids[0][:6]])
with torch.no_grad():
    greedy = model.generate(
        prompt, max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=eot
    )[0, prompt.shape[1] :].tolist()

tokenizer_cases = [
    "Hello world",
    " leading space",
    "Mr. Darcy's  double  space\nnew line",
    "Unicode: café, naïve, 東京 🙂",
    "end<|endoftext|>start",
]
ref = {
    "generator": f"torch {torch.__version__}, transformers {transformers.__version__}",
    "input_ids": batch.tolist(),
    "logits": [[[round(float(v), 6) for v in row] for row in seq] for seq in logits],
    "greedy_prompt": prompt[0].tolist(),
    "greedy_ids": greedy,
    "tokenizer_cases": [{"text": t, "ids": tok.encode(t).ids} for t in tokenizer_cases],
    "tokenizer_vocab_size": vocab,
}
with open(REF, "w") as f:
    json.dump(ref, f)
print(f"wrote {OUT} and {REF}: vocab {vocab}, seq {n}, greedy {greedy}")
