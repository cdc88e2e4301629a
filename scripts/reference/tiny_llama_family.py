#!/usr/bin/env python3
"""Tiny random Llama-family checkpoints in Hugging Face format plus reference outputs from
PyTorch + transformers, for manners' parity tests of the `llama`, `qwen2` and `qwen3` families.

Run from the repository root (needs: pip install torch transformers tokenizers):

    python3 scripts/reference/tiny_llama_family.py

Writes, under crates/manners-model/tests/fixtures/:
- tiny-llama/  LlamaForCausalLM: 4 heads over 2 key/value heads (GQA), untied LM head,
               rope_scaling llama3; a Llama-3-style chat template in chat_template.jinja
               (transformers 5's layout); f32 weights.
- tiny-qwen2/  Qwen2ForCausalLM: q/k/v biases, tied head; a ChatML template inside
               tokenizer_config.json (transformers 4's layout); f32 weights.
- tiny-qwen3/  Qwen3ForCausalLM: per-head q/k RMSNorm, explicit head_dim 16 (not hidden/heads),
               tied head; ChatML in chat_template.jinja; bf16 weights.
- tiny-llama-family-reference.json: per family, input ids and logits, greedy ids, and the
  masked SFT loss, global gradient norm and loss after 3 AdamW steps (clip 1.0, weight decay
  on the projection matrices).

The outputs are committed; CI never runs Python.
"""
import gzip
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "crates/manners-model/tests/fixtures")
REF = os.path.join(FIXTURES, "tiny-llama-family-reference.json")
CORPUS = os.path.join(ROOT, "../shared/data/corpus/austen.txt.gz")

torch.set_num_threads(1)

if not os.path.exists(CORPUS):
    sys.exit(f"corpus not found: {CORPUS}")
with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
    TEXT = f.read(200_000)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_level_bpe(specials):
    """A small byte-level BPE (as Llama 3 and Qwen ship) with `specials` as added tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=480,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT[i : i + 2000] for i in range(0, len(TEXT), 2000)], trainer)
    return tok


def randomize(model, seed):
    """Every parameter random (norms around 1, biases small), so a tensor loaded into the wrong
    place cannot go unnoticed, and logits far from ties."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.2 * noise)


FAMILIES = {
    "llama": dict(
        cls=LlamaForCausalLM,
        config=LlamaConfig(
            vocab_size=512,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            },
            tie_word_embeddings=False,
            attention_bias=False,
        ),
        specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad=None,
        template=LLAMA3_TEMPLATE,
        template_in_config=False,
        dtype=torch.float32,
    ),
    "qwen2": dict(
        cls=Qwen2ForCausalLM,
        config=Qwen2Config(
            vocab_size=512,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            use_sliding_window=False,
        ),
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        template=CHATML_TEMPLATE,
        template_in_config=True,
        dtype=torch.float32,
    ),
    "qwen3": dict(
        cls=Qwen3ForCausalLM,
        config=Qwen3Config(
            vocab_size=512,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            attention_bias=False,
            use_sliding_window=False,
        ),
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        template=CHATML_TEMPLATE,
        template_in_config=False,
        dtype=torch.bfloat16,
    ),
}

TEXTS = [
    "It is a truth universally acknowledged, that a single man",
    "Emma Woodhouse, handsome, clever, and rich",
]
PROJECTIONS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight",
               "gate_proj.weight", "up_proj.weight", "down_proj.weight")

reference = {"generator": f"torch {torch.__version__}, transformers {transformers.__version__}"}
for seed, (family, spec) in enumerate(FAMILIES.items(), start=1):
    out = os.path.join(FIXTURES, f"tiny-{family}")
    tok = byte_level_bpe(spec["specials"])
    cfg = spec["config"]
    cfg.bos_token_id = tok.token_to_id(spec["bos"]) if spec["bos"] else None
    cfg.eos_token_id = tok.token_to_id(spec["eos"])
    cfg.pad_token_id = tok.token_to_id(spec["pad"]) if spec["pad"] else None
    torch.manual_seed(seed)
    model = spec["cls"](cfg).eval()
    randomize(model, seed)
    model = model.to(spec["dtype"])
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        os.remove(os.path.join(out, f))
    model.save_pretrained(out, safe_serialization=True)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=spec["bos"], eos_token=spec["eos"], pad_token=spec["pad"]
    )
    fast.chat_template = spec["template"]
    fast.model_max_length = cfg.max_position_embeddings
    fast.save_pretrained(out)
    jinja = os.path.join(out, "chat_template.jinja")
    tc_path = os.path.join(out, "tokenizer_config.json")
    with open(tc_path) as f:
        tc = json.load(f)
    if spec["template_in_config"]:
        # transformers 4's layout: the template inside tokenizer_config.json.
        if os.path.exists(jinja):
            os.remove(jinja)
        tc["chat_template"] = spec["template"]
    else:
        tc.pop("chat_template", None)
        with open(jinja, "w") as f:
            f.write(spec["template"])
    with open(tc_path, "w") as f:
        json.dump(tc, f, indent=2)
    for junk in ("special_tokens_map.json",):
        p = os.path.join(out, junk)
        if os.path.exists(p):
            os.remove(p)

    # Reference outputs, in f32 (a bf16 checkpoint is widened once, as manners computes).
    model = spec["cls"].from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
    ids = [tok.encode(t).ids for t in TEXTS]
    n = min(len(x) for x in ids)
    batch = torch.tensor([x[:n] for x in ids])
    with torch.no_grad():
        logits = model(batch).logits
    prompt = torch.tensor([ids[0][:6]])
    with torch.no_grad():
        greedy = model.generate(
            prompt, max_new_tokens=20, do_sample=False, eos_token_id=None,
            pad_token_id=cfg.eos_token_id,
        )[0, prompt.shape[1]:].tolist()
    chat = [{"role": "user", "content": "Who wrote Emma?"}, {"role": "assistant", "content": "Jane Austen."}]
    chat_ids = fast.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    prompt_ids = fast.apply_chat_template(chat[:1], tokenize=True, add_generation_prompt=True,
                                          return_dict=True)["input_ids"]

    # The learner: masked loss, global grad norm, three AdamW steps.
    T = 16
    g = torch.Generator().manual_seed(7)
    inputs = torch.randint(1, 480, (2, T), generator=g)
    targets = torch.randint(1, 480, (2, T), generator=g)
    mask = torch.zeros(2, T)
    mask[0, 5:12] = 1.0
    mask[1, 2:4] = 1.0
    mask[1, 9:16] = 1.0
    LR, WD, CLIP = 1e-2, 0.1, 1.0
    model.train()
    decay = [p for name, p in model.named_parameters() if name.endswith(PROJECTIONS)]
    no_decay = [p for name, p in model.named_parameters() if not name.endswith(PROJECTIONS)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WD}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.999), eps=1e-8,
    )

    def masked_loss():
        lg = model(inputs).logits
        ce = torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), targets.reshape(-1),
                                               reduction="none")
        m = mask.reshape(-1)
        return (ce * m).sum() / m.sum()

    losses, norms = [], []
    for _ in range(3):
        opt.zero_grad()
        loss = masked_loss()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        losses.append(loss.item())
        norms.append(norm.item())
        opt.step()
    with torch.no_grad():
        final = masked_loss().item()

    reference[family] = {
        "input_ids": batch.tolist(),
        "logits": [[[round(float(v), 6) for v in row] for row in seq] for seq in logits],
        "greedy_prompt": prompt[0].tolist(),
        "greedy_ids": greedy,
        "chat_ids": chat_ids,
        "chat_prompt_ids": prompt_ids,
        "sft": {
            "inputs": inputs.tolist(),
            "targets": targets.tolist(),
            "mask": mask.tolist(),
            "lr": LR,
            "weight_decay": WD,
            "clip": CLIP,
            "losses": losses,
            "grad_norms": norms,
            "loss_after_3_steps": final,
        },
    }
    print(f"{family}: vocab {tok.get_vocab_size()}, seq {n}, greedy {greedy[:8]}..., losses {losses}")

with open(REF, "w") as f:
    json.dump(reference, f)
print(f"wrote {REF}")
