#!/usr/bin/env python3
"""PyTorch baseline for `manners bench`: the same model shapes and batches, fp32, eager,
2 threads (like this machine), the way Hugging Face users train: full logits at every position,
cross-entropy with the loss mask (labels -100), AdamW, global-norm clipping. Prints JSON.

    python3 scripts/bench/torch_bench.py [--steps 5] [--supervised 0.35] [--threads 2] [--device cpu|cuda]

Each configuration runs in its own process so its peak RSS (ru_maxrss) is its own. With
`--device cuda` the steps are timed with CUDA synchronisation, peak GPU memory
(`torch.cuda.max_memory_allocated`) is reported as `peak_gpu_mem`, and `matmul_peak` / `mfu` use
a 4096^3 fp32 matmul on the GPU (TF32 off, so fp32 means fp32).
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
    # SmolLM2-135M's shape: Llama family, 9 heads over 3 key/value heads, SwiGLU, tied head.
    "smollm2-135m": dict(llama=True, n_layer=30, n_head=9, n_kv_head=3, n_embd=576, n_inner=1536,
                         vocab=49152, batch=4, seq=256),
}


def model_for(shape):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    if shape.get("llama"):
        cfg = LlamaConfig(
            vocab_size=shape["vocab"], hidden_size=shape["n_embd"], intermediate_size=shape["n_inner"],
            num_hidden_layers=shape["n_layer"], num_attention_heads=shape["n_head"],
            num_key_value_heads=shape["n_kv_head"], max_position_embeddings=8192,
            rope_theta=100000.0, tie_word_embeddings=True, attn_implementation="sdpa",
        )
        torch.manual_seed(0)
        return LlamaForCausalLM(cfg)
    cfg = GPT2Config(
        vocab_size=shape["vocab"], n_positions=1024, n_embd=shape["n_embd"], n_layer=shape["n_layer"],
        n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg)


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def memory(device):
    import torch

    out = {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device == "cuda":
        out["peak_gpu_mem"] = torch.cuda.max_memory_allocated()
    return out


def matmul_peak(device):
    """FLOP/s of the fastest of 7 fp32 n^3 matmuls after warm-up."""
    import torch

    n = 4096 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for i in range(9):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train(name, steps, supervised, threads, device, q):
    import torch

    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    s = SHAPES[name]
    model = model_for(s).to(device).train()
    b, t, v = s["batch"], s["seq"], s["vocab"]
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, v, (b, t), generator=g).to(device)
    targets = torch.randint(0, v, (b, t), generator=g)
    span = round(t * supervised)
    targets[:, : t - span] = -100  # unsupervised positions
    targets = targets.to(device)
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
    for _ in range(steps if name == "tiny" or device == "cuda" else min(steps, 5)):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    sec = statistics.median(times)
    params = sum(p.numel() for p in model.parameters())
    out = {
        "step_secs": sec,
        "tokens_per_sec": b * t / sec,
        "supervised_per_sec": b * span / sec,
        "params": params,
        **memory(device),
    }
    if device == "cuda":
        peak = matmul_peak(device)
        out["matmul_peak"] = peak
        out["mfu"] = 6 * params * b * t / sec / peak
    q.put(out)


def generate(threads, device, q):
    import torch

    torch.set_num_threads(threads)
    model = model_for(SHAPES["gpt2-small"]).to(device).eval()
    ids = torch.tensor([[(i * 7919) % 50257 for i in range(32)]]).to(device)
    with torch.no_grad():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
        times = []
        for _ in range(3):
            sync(device)
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)
            sync(device)
            times.append(time.perf_counter() - t0)
    q.put({"cached_tokens_per_sec": 64 / statistics.median(times), **memory(device)})


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
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--only", default="tiny,gpt2-small,smollm2-135m,generate",
                    help="comma-separated: tiny, gpt2-small, smollm2-135m, generate")
    a = ap.parse_args()
    only = a.only.split(",")
    import torch, transformers

    res = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": a.threads, "device": a.device}
    if a.device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    for name in SHAPES:
        if name in only:
            res[name] = run(train, name, a.steps, a.supervised, a.threads, a.device)
    if "generate" in only:
        res["generate"] = run(generate, a.threads, a.device)
    print(json.dumps(res))
