#!/usr/bin/env bash
# Peak memory against dataset size: files of 10k / 100k / 1M conversations (the shipped
# instruction set's lines, repeated), each through `train --dry-run` (read, split, encode,
# batch: everything before the first step) and through a 3-step training run
# of the shipped base model. Prints a Markdown table. Usage: scripts/bench/data_memory.sh
# (after `cargo build --release`); SIZES="10000 100000" to choose the sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/manners}"
SIZES="${SIZES:-10000 100000 1000000}"
# On disk next to the repository (not a memory-backed /tmp): the token store goes here too.
work=$(mktemp -d -p "$PWD" .data-memory.XXXX)
trap 'rm -rf "$work"' EXIT
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
echo
echo "| conversations | file | dry run: peak RSS | time | 3 training steps: peak RSS | time |"
echo "|---|---|---|---|---|---|"
for n in $SIZES; do
  f="$work/$n.jsonl"
  touch "$f"
  while [ "$(wc -l < "$f" 2>/dev/null || echo 0)" -lt "$n" ]; do
    cat assets/sft/train.jsonl >> "$f"
  done
  head -n "$n" "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  size=$(du -m "$f" | cut -f1)
  measure() {
    /usr/bin/time -f "%M %e" -o "$work/time" "$@" > "$work/log" 2>&1 || {
      cat "$work/log" >&2
      exit 1
    }
    read -r kb secs < "$work/time"
    echo "$((kb / 1024)) MiB | ${secs} s"
  }
  dry=$(measure "$BIN" train --model assets/base --data "$f" --dry-run --out "$work/runs")
  run=$(measure "$BIN" train --model assets/base --data "$f" --max-steps 3 --no-tui \
    --eval-every 0 --sample-every 0 --out "$work/runs")
  rm -rf "$work/runs"
  echo "| $n | ${size} MB | $dry | $run |"
done
