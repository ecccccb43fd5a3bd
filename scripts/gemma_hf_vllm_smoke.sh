#!/usr/bin/env bash
# Smoke test: vLLM (CPU) serves a Gemma Hugging Face folder made by `cepr models gemma-hf --out DIR` and answers a
# chat through the folder's chat template. Usage: scripts/gemma_hf_vllm_smoke.sh DIR [PORT]
# Prints the /v1/models answer, the chat reply and the time to start; stops the server it started.
set -euo pipefail
DIR=${1:?usage: $0 HF_DIR [PORT]}
PORT=${2:-8011}
PY=$(python -c 'from cepr.llm.vllm_env import find_vllm_python as f; print(f())')
LOG=$(mktemp)
start=$(date +%s)
VLLM_CPU_KVCACHE_SPACE=1 "$PY" -m vllm.entrypoints.openai.api_server --model "$DIR" --served-model-name gemma \
  --dtype float32 --max-model-len 1024 --enforce-eager --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 1 300); do
  if curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null; then break; fi
  if ! kill -0 "$PID" 2>/dev/null; then echo "vLLM exited:"; tail -40 "$LOG"; exit 1; fi
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/v1/models" || { echo "vLLM did not answer in 300 s:"; tail -40 "$LOG"; exit 1; }
echo; echo "started in $(( $(date +%s) - start )) s"
curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "gemma", "temperature": 0, "max_tokens": 24,
  "messages": [{"role": "system", "content": "Answer in one short sentence."},
               {"role": "user", "content": "What colour is the sky on a clear day?"}]}'
echo
curl -sf "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' -d '{
  "model": "gemma", "temperature": 0, "max_tokens": 8, "prompt": "The capital of France is"}'
echo
