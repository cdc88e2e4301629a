#!/usr/bin/env python3
"""kill -9 soak: kill training runs at chosen moments, resume each, compare with a run that
was never interrupted.

Standard library only. Usage (from the repository root, after `cargo build --release`):

    python3 scripts/soak/kill9.py [--trials 20] [--seed 1] [--bin PATH] [--work DIR]

Each trial starts the same run (the shipped base model, dropout 0.1, 24 steps, a checkpoint and
an evaluation every 4 steps, samples every 8), kills it with SIGKILL at one of these moments,
in turn:

  first-checkpoint  while the first checkpoint's temporary folder is being written
  mid-checkpoint    while a later checkpoint is being written
  mid-eval          after a step that is followed by an evaluation, before the evaluation ends
  mid-step          at a random time during training
  final-export      while final/ is being written (after the last checkpoint)

then checks every complete checkpoint against its checksums.json (CRC-32, computed here with
zlib, independently of the Rust code), resumes with `train --resume`, and compares the resumed
run's final weights and last optimiser state byte for byte with the uninterrupted run's.
Prints one line per trial and a summary; exits 1 if any trial differs or any checkpoint is
unreadable.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

ARGS = [
    "train", "--model", "assets/base", "--data", "assets/sft/train.jsonl",
    "--max-steps", "24", "--save-every", "4", "--eval-every", "4", "--sample-every", "8",
    "--dropout", "0.1", "--no-tui", "--log-every", "1",
]
PHASES = ["first-checkpoint", "mid-checkpoint", "mid-eval", "mid-step", "final-export"]
EVAL_EVERY = 4
SAMPLE_EVERY = 8


def env():
    e = dict(os.environ)
    e.setdefault("XDG_RUNTIME_DIR", "/tmp")
    return e


def crc_file(p: Path) -> str:
    c = 0
    with open(p, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return f"{c & 0xFFFFFFFF:08x}"
            c = zlib.crc32(b, c)


def check_checkpoints(run: Path) -> tuple[int, list[str]]:
    """Complete checkpoints (those with state.json) and the problems found in them."""
    n, bad = 0, []
    cdir = run / "checkpoints"
    if not cdir.is_dir():
        return 0, []
    for d in sorted(cdir.iterdir()):
        if not d.name.startswith("step-") or not (d / "state.json").is_file():
            continue
        n += 1
        try:
            sums = json.loads((d / "checksums.json").read_text())
            for name, want in sums.items():
                if crc_file(d / name) != want:
                    bad.append(f"{d / name}: CRC mismatch")
            json.loads((d / "state.json").read_text())
        except Exception as e:  # noqa: BLE001 - every failure is a finding
            bad.append(f"{d}: {e}")
    return n, bad


def temp_checkpoint(run: Path) -> bool:
    cdir = run / "checkpoints"
    try:
        return any(".tmp-" in p.name for p in cdir.iterdir())
    except FileNotFoundError:
        return False


def complete_checkpoints(run: Path) -> int:
    try:
        return sum((d / "state.json").is_file() for d in (run / "checkpoints").iterdir()
                   if d.name.startswith("step-"))
    except FileNotFoundError:
        return 0


def final_being_written(run: Path) -> bool:
    try:
        return any(p.name.startswith(".final.tmp-") for p in run.iterdir())
    except FileNotFoundError:
        return False


def last_event(run: Path) -> dict:
    """The newest event in metrics.jsonl (written and flushed as each happens)."""
    try:
        with open(run / "metrics.jsonl", "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = [ln for ln in f.read().split(b"\n") if ln.strip()]
        return json.loads(lines[-1]) if lines else {}
    except (FileNotFoundError, ValueError):
        return {}


def doing(run: Path) -> str:
    """What the run was doing, from its files: the moment of the kill."""
    if temp_checkpoint(run):
        return "writing checkpoint" + (" (the first)" if complete_checkpoints(run) == 0 else "")
    if final_being_written(run):
        return "writing final/"
    e = last_event(run)
    kind, step = e.get("event"), e.get("step", 0)
    if kind == "step" and step % EVAL_EVERY == 0:
        return f"evaluating after step {step}"
    if kind in ("eval", "sample") and step % SAMPLE_EVERY == 0:
        return f"generating samples at step {step}"
    if kind in ("step", "checkpoint", "started", "eval"):
        return f"training step {step + 1}"
    if kind == "finished":
        return "finishing (report)"
    return f"after event {kind!r} of step {step}"


def run_and_kill(binary: str, out: Path, name: str, phase: str, rng: random.Random) -> str:
    """Starts the run, kills it with SIGKILL at `phase`; returns what it was doing then."""
    run = out / name
    with open(out / f"{name}.killed.log", "w") as log:
        p = subprocess.Popen([binary, *ARGS, "--out", str(out), "--name", name],
                             stdout=log, stderr=subprocess.STDOUT, env=env())
        deadline = time.monotonic() + rng.uniform(2.0, 20.0)
        eval_after = rng.choice([8, 12, 16, 20])
        while p.poll() is None:
            if phase == "first-checkpoint":
                kill = temp_checkpoint(run) and complete_checkpoints(run) == 0
            elif phase == "mid-checkpoint":
                kill = temp_checkpoint(run) and complete_checkpoints(run) >= 2
            elif phase == "mid-eval":
                e = last_event(run)
                kill = e.get("event") == "step" and e.get("step") == eval_after
            elif phase == "mid-step":
                kill = time.monotonic() >= deadline
            else:  # final-export
                kill = final_being_written(run)
            if kill:
                if phase not in ("mid-step", "final-export"):
                    time.sleep(rng.uniform(0.0, 0.1))
                what = doing(run)
                p.send_signal(signal.SIGKILL)
                p.wait()
                return what
            time.sleep(0.002)
    return f"NOT KILLED (exit {p.returncode})"


def finish(binary: str, run: Path) -> int:
    with open(str(run) + ".resume.log", "w") as log:
        return subprocess.run([binary, "train", "--resume", str(run), "--no-tui"],
                              stdout=log, stderr=subprocess.STDOUT, env=env()).returncode


def cbor(b: bytes, i: int = 0):
    """Decodes the CBOR item at b[i:] (the subset burnpack headers use); returns (value, end)."""
    major, info = b[i] >> 5, b[i] & 31
    i += 1
    if info < 24:
        n = info
    else:
        size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        n, i = int.from_bytes(b[i:i + size], "big"), i + size
    if major == 0:
        return n, i
    if major == 1:
        return -1 - n, i
    if major in (2, 3):
        raw = b[i:i + n]
        return (raw.decode() if major == 3 else raw), i + n
    if major == 4:
        out = []
        for _ in range(n):
            v, i = cbor(b, i)
            out.append(v)
        return out, i
    if major == 5:
        out = {}
        for _ in range(n):
            k, i = cbor(b, i)
            out[k], i = cbor(b, i)
        return out, i
    if major == 7 and info in (20, 21, 22):
        return {20: False, 21: True, 22: None}[info], i
    raise ValueError(f"CBOR major {major} info {info} at {i}")


def burnpack(p: Path) -> tuple[dict, bytes]:
    """A burnpack file's tensor table and data: magic, version, u32 header length, a CBOR
    header, then the data section from the next multiple of 256 bytes (burn-pack's
    `aligned_data_section_start`)."""
    b = p.read_bytes()
    assert b[:4] == b"NRUB", p
    n = int.from_bytes(b[6:10], "little")
    header, _ = cbor(b[10:10 + n])
    return header["tensors"], b[(10 + n + 255) // 256 * 256:]


def fingerprint(run: Path) -> dict[str, str]:
    """CRC-32s of the final weights and of the newest checkpoint's tensors, by parameter name.

    Burn gives every parameter a random id per process and keys the optimiser state by it, so
    the checkpoint files differ in their headers and tensor order between processes; what must
    be equal is each parameter's weights and moments."""
    last = max((d for d in (run / "checkpoints").iterdir() if d.name.startswith("step-")),
               key=lambda d: d.name)
    out = {"final/model.safetensors": crc_file(run / "final" / "model.safetensors")}
    mt, md = burnpack(last / "model.bpk")
    names = {t["param_id"]: name for name, t in mt.items()}
    for name, t in mt.items():
        a, z = t["data_offsets"]
        out[f"model {name}"] = f"{zlib.crc32(md[a:z]):08x}"
    ot, od = burnpack(last / "optim.bpk")
    for key, t in ot.items():
        pid, _, what = key.partition(".")
        a, z = t["data_offsets"]
        out[f"optim {names.get(int(pid), pid)}.{what}"] = f"{zlib.crc32(od[a:z]):08x}"
    return out


def differences(want: dict, got: dict) -> str:
    keys = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    return f"{len(keys)} differ, e.g. {keys[:3]}" if keys else ""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bin", default=os.path.expanduser(
        os.environ.get("CARGO_TARGET_DIR", "target") + "/release/manners"))
    ap.add_argument("--work", default="/tmp/manners-soak")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="comma-separated moments to kill at, taken in turn")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    out = Path(a.work)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    t = time.monotonic()
    r = subprocess.run([a.bin, *ARGS, "--out", str(out), "--name", "reference"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    if r.returncode != 0:
        print(f"reference run failed: exit {r.returncode}")
        return 1
    want = fingerprint(out / "reference")
    print(f"reference run: {time.monotonic() - t:.0f} s; comparing {len(want)} CRC-32s "
          f"(final weights, every parameter and optimiser moment of the last checkpoint)",
          flush=True)

    same, unreadable, checked = 0, 0, 0
    moments: dict[str, int] = {}
    for i in range(a.trials):
        phases = a.phases.split(",")
        phase = phases[i % len(phases)]
        name = f"trial-{i:02d}"
        what = run_and_kill(a.bin, out, name, phase, rng)
        kind = what.split(" at step")[0].split(" after step")[0].split(" step")[0]
        moments[kind] = moments.get(kind, 0) + 1
        n, bad = check_checkpoints(out / name)
        checked += n
        unreadable += len(bad)
        rc = finish(a.bin, out / name)
        got = fingerprint(out / name) if rc == 0 else {}
        ok = rc == 0 and got == want
        same += ok
        print(f"{name} {phase:16} killed while {what:34} complete checkpoints {n}, "
              f"bad {len(bad)}; resume exit {rc}; "
              f"{'identical' if ok else 'DIFFERENT ' + differences(want, got)}", flush=True)
        for b in bad:
            print(f"    {b}")
    print("\nkilled while: " + ", ".join(f"{k} {v}" for k, v in sorted(moments.items())))
    print(f"{same}/{a.trials} resumed runs bit-identical to the uninterrupted run; "
          f"{unreadable} unreadable of {checked} complete checkpoints left by the kills")
    return 0 if same == a.trials and unreadable == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
