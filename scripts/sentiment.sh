#!/usr/bin/env bash
# The full sentiment run behind the README's figures (a script, not a test; about an hour on
# 2 cores): the data, `bertserve finetune` with its default settings, then the fine-tuned model
# served over gRPC and scored on every test row against PyTorch, and the frozen-feature probe.
#   scripts/sentiment.sh [WORK]     (default WORK: runs/sentiment; needs ./dev test's .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/sentiment}
BIN=.venv/bin
mkdir -p "$WORK"
lscpu >"$WORK/lscpu.txt"

"$BIN/bertserve" data sentiment --out "$WORK/sentiment"
start=$(date +%s)
"$BIN/bertserve" finetune minilm --data "$WORK/sentiment" --out "$WORK/repo" 2> >(tee "$WORK/finetune.log" >&2)
echo "bertserve finetune took $(($(date +%s) - start)) s" | tee "$WORK/finetune-seconds.txt"
if [ ! -f "$WORK/repo/minilm/fp32-opt/manifest.json" ]; then
  "$BIN/bertserve" export minilm --repo "$WORK/repo" --variants fp32-opt
fi

"$BIN/bertserve" serve --repo "$WORK/repo" --port 0 --port-file "$WORK/port" \
  --default-model minilm-sentiment >"$WORK/serve.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 240); do
  if [ -s "$WORK/port" ] && "$BIN/bertserve" health --target "127.0.0.1:$(cat "$WORK/port")" >/dev/null 2>&1; then
    break
  fi
  sleep 0.5
done
target="127.0.0.1:$(cat "$WORK/port")"
"$BIN/python" scripts/sentiment_eval.py --data "$WORK/sentiment" --target "$target" \
  --model minilm-sentiment --checkpoint "$WORK/repo/.finetune/minilm-sentiment/best" \
  --out "$WORK/eval.json"
"$BIN/bertserve" probe --data "$WORK/sentiment" --target "$target" --model minilm --variant fp32-opt \
  --classifier minilm-sentiment --classifier-variant fp32-opt --out "$WORK/probe"
