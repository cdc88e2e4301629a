#!/usr/bin/env python3
"""PyTorch baseline for `manners bench`: the same model shapes and batches, fp32, eager,
2 threads (like this machine), the way Hugging Face users train: full logits at every position,
cross-entropy with the loss mask (labels -100), AdamW, global-norm clipping. Prints JSON.

    python3 scripts/bench/torch_bench.py [--steps 5] [--supervised 0.35] [--threads 2] [--device cpu|cuda]

Each training configuration also runs two stronger variants in the same shapes (under
`variants`): `eager_sup`, the LM head applied only at supervised positions (the work manners
does), and `compiled_sup`, that step under `torch.compile` (its compile time reported apart).
Each variant reports `flops_per_step`, the FLOPs it actually performs (block matmuls, attention
scores and values over the causal half of the t x t square, the head where it is applied;
forward + backward = 3 x forward), and `utilisation` against `matmul_peak`, a 2048^3 (CPU) fp32 matmul measured in
the same process. Off by default; `--variants all` (what `manners bench --torch` passes).
Generation (`generate`) has its own variants: HF `generate` as it comes, and with a static cache
under `torch.compile`. `attention-2048` times causal attention on its own (SDPA, forward and
backward) beside manners' fused attention.

Each configuration runs in its own process so its peak RSS (ru_maxrss) is its own; `peak_rss` is
read after the HF eager step's warm-up, `peak_rss_all_variants` at the end. The timed steps go
round-robin over the variants (one step of each per turn). Under `manners bench --torch`, a
training configuration takes turns with manners' measurement of the same shapes (`Turns`), so
both processes see the machine in the same seconds. With
`--device cuda` the steps are timed with CUDA synchronisation, peak GPU memory
(`torch.cuda.max_memory_allocated`) is reported as `peak_gpu_mem`, and `matmul_peak` / `mfu` use
a 4096^3 fp32 matmul on the GPU (TF32 off, so fp32 means fp32).
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import resource
import socket
import statistics
import time

SHAPES = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=256, vocab=8192, batch=16, seq=256),
    # Long context: the tiny model with the same 4,096 tokens per step in longer rows.
    "tiny-1024": dict(n_layer=4, n_head=4, n_embd=256, vocab=8192, batch=4, seq=1024),
    "tiny-2048": dict(n_layer=4, n_head=4, n_embd=256, vocab=8192, batch=2, seq=2048),
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, vocab=50257, batch=4, seq=256),
    # SmolLM2-135M's shape: Llama family, 9 heads over 3 key/value heads, SwiGLU, tied head.
    "smollm2-135m": dict(llama=True, n_layer=30, n_head=9, n_kv_head=3, n_embd=576, n_inner=1536,
                         vocab=49152, batch=4, seq=256),
}


class Turns:
    """Turn-taking with manners' measurement under `manners bench` (see `turns.rs` in
    manners-bench): with MANNERS_BENCH_TURNS set, connect to the referee as player `t` and wait
    for the first turn; `take()` hands the machine back and waits for the next one. Without the
    variable both are no-ops."""

    def __init__(self):
        self.sock = None
        addr = os.environ.get("MANNERS_BENCH_TURNS")
        if addr:
            host, port = addr.rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(b"t")
            self._wait()

    def _wait(self):
        if self.sock.recv(1) != b"g":
            self.sock = None  # the referee went away: run freely

    def take(self):
        if self.sock is not None:
            self.sock.sendall(b"r")
            self._wait()


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
        vocab_size=shape["vocab"], n_positions=max(1024, shape["seq"]), n_embd=shape["n_embd"], n_layer=shape["n_layer"],
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


def forward_flops(s, tokens, head_rows):
    """Matmul FLOPs of one forward pass: blocks, causal attention, and the head.

    Attention counts the causal half of the t x t square (t (t + 1) / 2 scores per row and
    head, for QK^T and again for AV): the work causal attention needs, which flash-style
    kernels (SDPA's, manners') do; an implementation that computes the whole square and masks
    half of it does extra work that is not counted."""
    d, L, t, v = s["n_embd"], s["n_layer"], s["seq"], s["vocab"]
    if s.get("llama"):
        hd = d // s["n_head"]
        kv = s["n_kv_head"] * hd
        per_token = 2 * (d * d + 2 * d * kv + d * d + 3 * d * s["n_inner"])
    else:
        per_token = 2 * 12 * d * d
    attention = 2 * 2 * tokens * (t + 1) / 2 * d  # QK^T and AV over the causal half, per layer
    return L * (per_token * tokens + attention) + 2 * head_rows * d * v


def variant_steps(model, s, ids, targets, span, v):
    """The three steps: HF eager with full logits, eager with the head on supervised positions,
    and the latter compiled. Each returns the loss and leaves gradients in the parameters."""
    import torch

    def eager_full():
        logits = model(ids).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, v), targets.reshape(-1), ignore_index=-100)

    body = model.model if s.get("llama") else model.transformer
    mask = targets.reshape(-1) != -100
    sup_targets = targets.reshape(-1)[mask]

    def eager_sup():
        hidden = body(ids).last_hidden_state
        h = hidden.reshape(-1, hidden.shape[-1])[mask]
        return torch.nn.functional.cross_entropy(model.lm_head(h), sup_targets)

    return {"eager_full": eager_full, "eager_sup": eager_sup, "compiled_sup": torch.compile(eager_sup)}


def train(name, steps, supervised, threads, device, variants, q):
    import torch

    turns = Turns()
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

    losses = variant_steps(model, s, ids, targets, span, v)
    names = ["eager_full", "eager_sup", "compiled_sup"] if variants else ["eager_full"]

    def step(loss_fn):
        """Seconds of one full training step."""
        sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sync(device)
        return time.perf_counter() - t0

    # Turns line up with manners' (`time_median` in manners-bench): building the model is the
    # first turn, the whole warm-up the second, each timed step one more, the matmul peak the
    # last. The compiled variant's warm-up holds its compilation. Peak memory of the HF eager
    # step is read after its own warm-up, before the other variants run; that warm-up is at
    # least two steps, as AdamW's moments exist from the second step on.
    warm = 2 if name.startswith("tiny") else 1
    warm_secs = {}
    rss_full = None
    turns.take()
    for vname in names:
        warm_secs[vname] = 0.0
        for _ in range(max(warm, 2) if vname == "eager_full" else warm):
            warm_secs[vname] += step(losses[vname])
        if vname == "eager_full":
            rss_full = memory(device)
    # Timed steps: each turn one step of every variant, so that all of them run beside the same
    # manners step when `manners bench` pairs the two processes; medians per variant.
    times = {vname: [] for vname in names}
    # As many timed steps as manners' side takes (`run_job` in manners-bench: at most 5 beyond the
    # tiny shapes, on every device), so that the two sides take the same turns.
    for _ in range(steps if name.startswith("tiny") else min(steps, 5)):
        turns.take()
        for vname in names:
            times[vname].append(step(losses[vname]))
    secs = {vname: statistics.median(ts) for vname, ts in times.items()}

    sec = secs["eager_full"]
    params = sum(p.numel() for p in model.parameters())
    out = {
        "step_secs": sec,
        "tokens_per_sec": b * t / sec,
        "supervised_per_sec": b * span / sec,
        "params": params,
        **rss_full,
    }
    turns.take()
    peak = matmul_peak(device) if (device == "cuda" or variants) else None
    if device == "cuda":
        out["matmul_peak"] = peak
        out["mfu"] = 6 * params * b * t / sec / peak
    if variants:
        out["matmul_peak"] = peak
        out["variants"] = {}
        for vname in names:
            vsec = secs[vname]
            head_rows = b * t if vname == "eager_full" else b * span
            flops = 3 * forward_flops(s, b * t, head_rows)
            entry = {
                "step_secs": vsec,
                "tokens_per_sec": b * t / vsec,
                "flops_per_step": flops,
                "utilisation": flops / vsec / peak,
            }
            if vname == "compiled_sup":
                # The warm-up steps hold the compilation; minus their steady-state time.
                entry["compile_secs"] = max(0.0, warm_secs[vname] - warm * vsec)
            out["variants"][vname] = entry
        out["peak_rss_all_variants"] = memory(device)["peak_rss"]
    q.put(out)


def generate(threads, device, variants, new, q):
    """Greedy generation, GPT-2 small, batch 1, a 32-token prompt and `new` new tokens, as HF
    `generate` runs it (`eager`: the default dynamic KV cache) and, with `variants`, as the HF
    docs' recipe for fast generation has it (`compiled_static`: a static cache and
    `torch.compile` of the forward pass; its compile time reported apart). `tokens_per_sec` of
    each variant is new tokens per second, the median of 3 runs; the top-level
    `cached_tokens_per_sec` is `eager`'s. Under `manners bench` this takes turns with manners'
    generation like a training step: building the model, the warm-up, then each timed run (one
    of every variant per turn)."""
    import torch

    turns = Turns()
    torch.set_num_threads(threads)
    model = model_for(SHAPES["gpt2-small"]).to(device).eval()
    ids = torch.tensor([[(i * 7919) % 50257 for i in range(32)]]).to(device)
    kwargs = {"eager": {}}
    if variants:
        kwargs["compiled_static"] = {"cache_implementation": "static"}

    forwards = {"eager": model.forward}

    def run(name, new):
        model.forward = forwards[name]
        sync(device)
        t0 = time.perf_counter()
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0,
                       **kwargs[name])
        sync(device)
        return time.perf_counter() - t0

    turns.take()
    warm = {}
    with torch.no_grad():
        for name in kwargs:
            if name == "compiled_static":
                rss = memory(device)  # the eager variant's, before compiling
                forwards[name] = torch.compile(forwards["eager"])
            # The compiled variant's warm-up holds its compilation (a full-length run, so
            # every shape the timed runs meet is compiled).
            warm[name] = run(name, new if name == "compiled_static" else 4)
        times = {name: [] for name in kwargs}
        for _ in range(3):
            turns.take()
            for name in kwargs:
                times[name].append(run(name, new))
    tps = {name: new / statistics.median(ts) for name, ts in times.items()}
    out = {"cached_tokens_per_sec": tps["eager"], **(rss if variants else memory(device))}
    if variants:
        out["variants"] = {name: {"tokens_per_sec": t} for name, t in tps.items()}
        out["variants"]["compiled_static"]["compile_secs"] = max(
            0.0, warm["compiled_static"] - new / tps["compiled_static"])
    q.put(out)


# The matrix products of `manners bench --only matmul-shapes` (m, k, n): an m x k by k x n
# product of row-major operands; keep in step with `matmul_shapes` in manners-bench.
PRODUCTS = [
    (4096, 256, 768), (4096, 256, 1024), (4096, 1024, 256), (256, 4096, 1024),
    (1024, 4096, 256), (1434, 256, 8192), (1024, 768, 3072), (358, 768, 50257),
]


def matmul_shapes(threads, device, q):
    """Median GFLOP/s of `torch.mm` on each product (10 runs after one warm-up, into a
    preallocated output, as the manners side writes into its own buffer)."""
    import torch

    torch.set_num_threads(threads)
    rows = []
    geo = 0.0
    for m, k, n in PRODUCTS:
        a = torch.randn(m, k, device=device)
        b = torch.randn(k, n, device=device)
        c = torch.empty(m, n, device=device)
        times = []
        for i in range(11):
            sync(device)
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            sync(device)
            if i > 0:
                times.append(time.perf_counter() - t0)
        g = 2 * m * k * n / statistics.median(times) / 1e9
        geo += math.log(g)
        rows.append({"shape": [m, k, n], "gflops": g})
    q.put({"products": rows, "geomean_gflops": math.exp(geo / len(rows))})


def attention(threads, device, seq, steps, q):
    """Causal attention, forward and backward, on its own (`attention_pass` in manners-bench):
    the tiny model's 4 heads of 64 over 4,096 tokens in rows of `seq`, from a packed qkv split
    into heads as HF GPT-2 does, through `scaled_dot_product_attention` (flash-style on the CPU),
    the gradient of the output's sum. Median of `steps` (at least 5) runs after two of warm-up;
    FLOPs counted as the training rows count attention (the causal half, backward 2x forward)."""
    import torch

    torch.set_num_threads(threads)
    heads, hd = 4, 64
    b = max(1, 4096 // seq)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(b, seq, 3 * heads * hd, generator=g).to(device)

    def run_once():
        qkv = base.detach().requires_grad_()
        q_, k_, v_ = (x.view(b, seq, heads, hd).transpose(1, 2) for x in qkv.split(heads * hd, dim=2))
        out = torch.nn.functional.scaled_dot_product_attention(q_, k_, v_, is_causal=True, scale=hd**-0.5)
        out.sum().backward()
        return qkv.grad

    times = []
    for i in range(2 + max(steps, 5)):
        sync(device)
        t0 = time.perf_counter()
        run_once()
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    secs = statistics.median(times)
    flops = 3 * 2 * 2 * b * heads * (seq * (seq + 1) / 2) * hd
    peak = matmul_peak(device)
    q.put({"shape": [b, heads, seq, hd], "secs": secs, "flops": flops, "gflops": flops / secs / 1e9,
           "matmul_peak": peak, "utilisation": flops / secs / peak})


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
                    help="comma-separated: tiny, gpt2-small, smollm2-135m, generate, generate-512, matmul-shapes, attention-2048")
    ap.add_argument("--variants", choices=["all", "none"], default="none",
                    help="also time eager with the head on supervised positions and its torch.compile")
    a = ap.parse_args()
    only = a.only.split(",")
    import torch, transformers

    res = {"torch": torch.__version__, "transformers": transformers.__version__, "threads": a.threads, "device": a.device}
    if a.device == "cuda":
        res["gpu"] = torch.cuda.get_device_name(0)
    for name in SHAPES:
        if name in only:
            res[name] = run(train, name, a.steps, a.supervised, a.threads, a.device, a.variants == "all")
    if "generate" in only:
        res["generate"] = run(generate, a.threads, a.device, a.variants == "all", 64)
    if "generate-512" in only:  # a long output: 480 new tokens, to 512 positions
        res["generate-512"] = run(generate, a.threads, a.device, a.variants == "all", 480)
    if "matmul-shapes" in only:
        res["matmul-shapes"] = run(matmul_shapes, a.threads, a.device)
    if "attention-2048" in only:
        res["attention-2048"] = run(attention, a.threads, a.device, 2048, a.steps)
    print(json.dumps(res))
