#!/usr/bin/env python3
"""PyTorch baseline for `manners bench`: the same model shapes and batches, fp32, eager,
2 threads (like this machine), the way Hugging Face users train: full logits at every position,
cross-entropy with the loss mask (labels -100), AdamW, global-norm clipping. Prints JSON.

    python3 scripts/bench/torch_bench.py [--steps 5] [--supervised 0.35] [--threads 2]

Each configuration runs in its own process so its peak RSS (ru_maxrss) is its own.
"""
import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

SHAPES = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=256, vocab=8192, batch=16, seq=256),
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, vocab=50257, batch=4, seq=256),
}


def model_for(shape):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=shape["vocab"], n_positions=1024, n_embd=shape["n_embd"], n_layer=shape["n_layer"],
        n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg)


def train(name, steps, supervised, threads, q):
    import torch

    torch.set_num_threads(threads)
    s = SHAPES[name]
    model = model_for(s).train()
    b, t, v = s["batch"], s["seq"], s["vocab"]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, v, (b, t), generator=g)
    targets = torch.randint(0, v, (b, t), generator=g)
    span = round(t * supervised)
    targets[:, : t - span] = -100  # unsupervised positions
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, eps=1e-8, weight_decay=0.0)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    warm = 2 if name == "tiny" else 1
    for _ in range(warm):
        step()
    times = []
    for _ in range(steps if name == "tiny" else min(steps, 5)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    q.put({
        "step_secs": sec,
        "tokens_per_sec": b * t / sec,
        "supervised_per_sec": b * span / sec,
        "params": params,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    })


def generate(threads, q):
    import torch

    torch.set_num_threads(threads)
    model = model_for(SHAPES["gpt2-small"]).eval()
    ids = torch.tensor([[(i * 7919) % 50257 for i in range(32)]])
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)
            times.append(time.perf_counter() - t0)
    q.put({"cached_tokens_per_sec": 64 / statistics.median(times), "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})


def run(target, *args):
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=target, args=(*args, q))
    p.start()
    out = q.get()
    p.join()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--supervised", type=float, default=0.35)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch, transformers

    res = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": a.threads}
    for name in SHAPES:
        res[name] = run(train, name, a.steps, a.supervised, a.threads)
    res["generate"] = run(generate, a.threads)
    print(json.dumps(res))
