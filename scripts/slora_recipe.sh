#!/usr/bin/env bash
# S-LoRA's synthetic serving suite on one GPU (benchmarks/README.md, "S-LoRA recipe").
#
#   scripts/slora_recipe.sh                       # everything: n ∈ {1, 8, 32, 128, 1000} × alpha ∈ {1, 0.3, 0.1}
#   NS="8 128" ALPHAS=0.3 scripts/slora_recipe.sh # a part (each phase is skipped when its JSON exists)
#
# 1. make-adapters: max(NS) random-weight PEFT adapters of SHAPE, ranks cycling through RANKS.
# 2. The run without LoRA: `loom serve --random-weights SHAPE` with LoRA off, the workload at RATE.
# 3. `loom serve` with LoRA on; for each n, register adapter-0 … adapter-(n-1) (--load-adapters)
#    and, for each alpha, send the same workload with S-LoRA's power-law adapter popularity.
# Each run's JSON goes to RESULTS/; summary.md has throughput and first-token latency against
# the run without LoRA, and per step (the server's loom:step_* counters, read before and after
# each run into TAG.steps.json) the rows computed, the distinct adapters met, the share of steps
# replayed from CUDA graphs, and the engine thread's milliseconds queueing kernels and waiting for them.
#
# Environment (defaults in brackets):
#   LOOM [.build/release/loom, else .device/loom]  SHAPE [llama-3.1-8b]  DEVICE [cuda]
#   NS ["1 8 32 128 1000"]  RANKS [8,16,32,64]  ALPHAS ["1 0.3 0.1"]  TARGETS [q_proj,k_proj,v_proj,o_proj]
#   RATE [20] req/s, gamma arrivals with CV [1]; NUM_PROMPTS [1000]; INPUT_RANGE / OUTPUT_RANGE [8,512] (uniform in [8, 512))
#   MAX_LORAS_PER_BATCH [128: every adapter of n = 128 resident; 8B q/k/v/o slots of rank 64 take ~14 GB]  MAX_LOADED_LORAS [256]  DISTINCT_WEIGHTS [128] (weight files on disk; the rest hard-link)
#   ADAPTERS_DIR [/tmp/loom-slora-adapters/SHAPE-RANKS-TARGETS]  RESULTS [benchmarks/results/slora-SHAPE]
#   OUT: when set (the device tool), RESULTS is copied there at the end, so that a later call that
#   carries the folder back skips the runs already done.
#   PORT [30000]  SEED [1]  SERVE_ARGS [extra flags for loom serve]  READY_TIMEOUT [900] s
#   MODEL_PATH: serve this model folder instead of random weights (a CPU smoke test:
#     MODEL_PATH=Fixtures/stories260k DEVICE=cpu NS="1 4" RANKS=8,16 ALPHAS=1 RATE=8 NUM_PROMPTS=16 \
#     INPUT_RANGE=8,64 OUTPUT_RANGE=8,32 DISTINCT_WEIGHTS=2 scripts/slora_recipe.sh)
#   VOCAB_SIZE [128000 with random weights, else read from the served model]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${LOOM:-}" ]; then
    if [ -x .build/release/loom ]; then LOOM=.build/release/loom
    elif [ -x .device/loom ]; then LOOM=.device/loom
    elif [ -f .device/loom.xz ]; then xz -dkf .device/loom.xz && chmod +x .device/loom && LOOM=.device/loom
    else echo "no loom binary: swift build -c release --product loom, or set LOOM" >&2; exit 1
    fi
fi
SHAPE=${SHAPE:-llama-3.1-8b}
MODEL_PATH=${MODEL_PATH:-}
if [ -n "$MODEL_PATH" ]; then
    model=(--model-path "$MODEL_PATH"); base_model=$MODEL_PATH; SHAPE=$(basename "$MODEL_PATH"); VOCAB_SIZE=${VOCAB_SIZE:-}
else
    model=(--random-weights "$SHAPE"); base_model=$SHAPE; VOCAB_SIZE=${VOCAB_SIZE:-128000}
fi
DEVICE=${DEVICE:-cuda}
NS=${NS:-"1 8 32 128 1000"}
RANKS=${RANKS:-8,16,32,64}
ALPHAS=${ALPHAS:-"1 0.3 0.1"}
TARGETS=${TARGETS:-q_proj,k_proj,v_proj,o_proj}
RATE=${RATE:-20}
CV=${CV:-1}
NUM_PROMPTS=${NUM_PROMPTS:-1000}
INPUT_RANGE=${INPUT_RANGE:-8,512}
OUTPUT_RANGE=${OUTPUT_RANGE:-8,512}
MAX_LORAS_PER_BATCH=${MAX_LORAS_PER_BATCH:-128}
MAX_LOADED_LORAS=${MAX_LOADED_LORAS:-256}
DISTINCT_WEIGHTS=${DISTINCT_WEIGHTS:-128}
ADAPTERS_DIR=${ADAPTERS_DIR:-/tmp/loom-slora-adapters/$SHAPE-${RANKS//,/_}-${TARGETS//,/_}}
RESULTS=${RESULTS:-benchmarks/results/slora-$SHAPE}
PORT=${PORT:-30000}
SEED=${SEED:-1}
SERVE_ARGS=${SERVE_ARGS:-}
READY_TIMEOUT=${READY_TIMEOUT:-900}
URL=http://127.0.0.1:$PORT
mkdir -p "$RESULTS"

max_n=0
for n in $NS; do [ "$n" -gt "$max_n" ] && max_n=$n; done
max_rank=0
for r in ${RANKS//,/ }; do [ "$r" -gt "$max_rank" ] && max_rank=$r; done
nranks=$(echo "${RANKS//,/ }" | wc -w)
distinct=$(( (DISTINCT_WEIGHTS + nranks - 1) / nranks * nranks ))

# Every run sends the same prompts and lengths (same seed); only the adapters differ.
workload=(--backend sglang --base-url "$URL" --dataset-name random --num-prompts "$NUM_PROMPTS"
          --input-len-range "$INPUT_RANGE" --output-len-range "$OUTPUT_RANGE" ${VOCAB_SIZE:+--vocab-size "$VOCAB_SIZE"}
          --request-rate "$RATE" --arrival gamma --cv "$CV" --seed "$SEED" --warmup-requests 4 --disable-tqdm)

server_pid=
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=
}
finish() {
    stop_server
    if [ -n "${OUT:-}" ]; then mkdir -p "$OUT/$(basename "$RESULTS")" && cp -r "$RESULTS"/. "$OUT/$(basename "$RESULTS")/"; fi
}
trap finish EXIT

http_get() {  # http_get PATH: the server's raw HTTP response (status line, headers, body)
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$1" >&3 && cat <&3) 2>/dev/null
}

start_server() {  # start_server LOGNAME [flags…]
    local log=$RESULTS/$1.log
    shift
    "$LOOM" serve "${model[@]}" --device "$DEVICE" --port "$PORT" "$@" $SERVE_ARGS >"$log" 2>&1 &
    server_pid=$!
    local waited=0
    until http_get /health | head -c 12 | grep -q 200; do
        if ! kill -0 "$server_pid" 2>/dev/null; then echo "loom serve exited; see $log" >&2; tail -20 "$log" >&2; exit 1; fi
        if [ "$waited" -ge "$READY_TIMEOUT" ]; then echo "loom serve not ready after ${READY_TIMEOUT}s; see $log" >&2; exit 1; fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "loom serve ready after ${waited}s ($log)"
}

step_totals() {  # the server's step counters (loom:step_* in /metrics): steps tokens prefill-tokens sequences adapters graph-steps, then seconds per phase
    local body v
    body=$(http_get /metrics)
    for name in steps_total step_tokens_total step_prefill_tokens_total step_sequences_total step_adapters_total graph_steps_total; do
        v=$(printf '%s\n' "$body" | grep "^loom:$name{" | awk '{print $NF}' | head -1)
        printf '%s ' "${v:-0}"
    done
    for phase in schedule prepare launch wait output; do
        v=$(printf '%s\n' "$body" | grep "^loom:step_seconds_total{" | grep "phase=\"$phase\"" | awk '{print $NF}' | head -1)
        printf '%s ' "${v:-0}"
    done
    echo
}

record_steps() {  # record_steps TAG "BEFORE" "AFTER": per-step means over one run into TAG.steps.json
    echo "$2 $3" | awk -v out="$RESULTS/$1.steps.json" '{
        h = NF / 2; s = $(h + 1) - $1; if (s <= 0) s = 1
        printf "{\"steps\": %d, \"tokens_per_step\": %.2f, \"prefill_tokens_per_step\": %.2f, \"sequences_per_step\": %.2f, \"distinct_adapters_per_step\": %.2f, \"graph_step_fraction\": %.3f", \
            $(h + 1) - $1, ($(h + 2) - $2) / s, ($(h + 3) - $3) / s, ($(h + 4) - $4) / s, ($(h + 5) - $5) / s, ($(h + 6) - $6) / s > out
        split("schedule prepare launch wait output", phase, " ")
        for (i = 1; i <= 5; i++) printf ", \"%s_ms_per_step\": %.3f", phase[i], 1000 * ($(h + 6 + i) - $(6 + i)) / s > out
        printf "}\n" > out }'
}

steps_field() {  # steps_field KEY TAG: a number of TAG.steps.json, or nan
    local f=$RESULTS/$2.steps.json
    if [ -f "$f" ]; then grep -o "\"$1\": [^,}]*" "$f" | sed 's/.*: //'; else echo nan; fi
}

field() {  # field KEY FILE: a top-level number of the first run of an --output-json document
    local v
    v=$(grep -o "\"$1\" : [^,}]*" "$2" | head -1 | sed 's/.*: //; s/"//g')
    case "$v" in ''|null) echo nan ;; *) echo "$v" ;; esac
}

# 1. Adapters.
if [ ! -f "$ADAPTERS_DIR/adapters.json" ] || [ "$(grep -c '"name"' "$ADAPTERS_DIR/adapters.json")" -lt "$max_n" ]; then
    "$LOOM" bench make-adapters --base "$base_model" --count "$max_n" --ranks "$RANKS" --target-modules "$TARGETS" \
        --alpha-scale 1 --dtype bf16 --seed 0 --distinct-weights "$distinct" --out "$ADAPTERS_DIR"
fi

# 2. Without LoRA.
base=$RESULTS/base.json
if [ ! -f "$base" ]; then
    start_server serve-base
    before=$(step_totals)
    "$LOOM" bench serve "${workload[@]}" --tag "base" --output-json "$base" --output-file "$RESULTS/runs.jsonl" | tee "$RESULTS/base.txt"
    record_steps base "$before" "$(step_totals)"
    stop_server
fi
base_rps=$(field request_throughput "$base")
if awk -v t="$base_rps" -v r="$RATE" 'BEGIN { exit !(t > 0.9 * r) }'; then
    echo "warning: without LoRA the server kept up with RATE=$RATE ($base_rps req/s): it was not saturated, so throughput ratios say little; raise RATE" >&2
fi

# 3. With LoRA, n adapters, S-LoRA's power-law popularity alpha.
need_lora=0
for n in $NS; do for a in $ALPHAS; do [ -f "$RESULTS/n$n-alpha$a.json" ] || need_lora=1; done; done
if [ "$need_lora" = 1 ]; then
    start_server serve-lora --enable-lora --max-lora-rank "$max_rank" --lora-target-modules ${TARGETS//,/ } \
        --max-loras-per-batch "$MAX_LORAS_PER_BATCH" --max-loaded-loras "$MAX_LOADED_LORAS"
    for n in $NS; do
        for a in $ALPHAS; do
            out=$RESULTS/n$n-alpha$a.json
            [ -f "$out" ] && continue
            before=$(step_totals)
            "$LOOM" bench serve "${workload[@]}" --num-adapters "$n" --adapter-pattern 'adapter-{i}' --load-adapters "$ADAPTERS_DIR" \
                --lora-request-distribution power --lora-power-alpha "$a" --baseline "$base" --tag "n$n-alpha$a" \
                --output-json "$out" --output-file "$RESULTS/runs.jsonl" | tee "$RESULTS/n$n-alpha$a.txt"
            record_steps "n$n-alpha$a" "$before" "$(step_totals)"
        done
    done
    stop_server
fi

# Summary: throughput and first-token latency against the run without LoRA.
{
    echo "# S-LoRA suite: $base_model, ranks {$RANKS} on $TARGETS, gamma arrivals at $RATE req/s (cv $CV), $NUM_PROMPTS requests, lengths U[$INPUT_RANGE) / U[$OUTPUT_RANGE)"
    echo
    echo "| n | alpha | req/s | out tok/s | throughput vs no LoRA | mean TTFT (ms) | p99 TTFT (ms) | TTFT vs no LoRA | failed | rows / step | adapters / step | graph steps | launch ms / step | wait ms / step |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '| - | - | %.2f | %.1f | 1 | %.1f | %.1f | 1 | %s | %s | %s | %s | %s | %s |\n' "$base_rps" "$(field output_throughput "$base")" \
        "$(field mean_ttft_ms "$base")" "$(field p99_ttft_ms "$base")" "$(field failed "$base")" \
        "$(steps_field tokens_per_step base)" "$(steps_field distinct_adapters_per_step base)" "$(steps_field graph_step_fraction base)" \
        "$(steps_field launch_ms_per_step base)" "$(steps_field wait_ms_per_step base)"
    for n in $NS; do
        for a in $ALPHAS; do
            f=$RESULTS/n$n-alpha$a.json
            [ -f "$f" ] || continue
            printf '| %s | %s | %.2f | %.1f | %.3f | %.1f | %.1f | %.3f | %s | %s | %s | %s | %s | %s |\n' "$n" "$a" "$(field request_throughput "$f")" \
                "$(field output_throughput "$f")" "$(field request_throughput_vs_baseline "$f")" "$(field mean_ttft_ms "$f")" \
                "$(field p99_ttft_ms "$f")" "$(field mean_ttft_vs_baseline "$f")" "$(field failed "$f")" \
                "$(steps_field tokens_per_step "n$n-alpha$a")" "$(steps_field distinct_adapters_per_step "n$n-alpha$a")" \
                "$(steps_field graph_step_fraction "n$n-alpha$a")" "$(steps_field launch_ms_per_step "n$n-alpha$a")" \
                "$(steps_field wait_ms_per_step "n$n-alpha$a")"
        done
    done
} > "$RESULTS/summary.md"
cat "$RESULTS/summary.md"
