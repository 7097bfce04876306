#!/usr/bin/env bash
# Builds the static `loom` binary here, then runs the GPU checks and benchmarks on the device in
# one command.
#
#   Here (a machine with Swift; the device has none):
#     scripts/gpu/check.sh build [PACKAGE_DIR [PRODUCT]]
#         swift build -c release --static-swift-stdlib --product loom, strip, xz -9 into .device/loom.xz,
#         and the commit into .device/commit (.device/ is ignored by git). PACKAGE_DIR defaults to the
#         repository root; a scratch package with the same subcommands works too (PRODUCT its executable).
#   Then, through the device tool, one call (about 2 minutes on a fresh machine, 1.5 of device time):
#     run(command: "bash scripts/gpu/check.sh device", carry: [".device"], timeout_s: 600)
#   Phases may be named after "device": hf (transformers bf16 references, scripts/gpu/hf_reference.py),
#   check (loom gpu-check: ops vs CPU, models vs references), serve (loom serve --device cuda against
#   PEFT's references over HTTP), bench (loom bench decode, Llama-3.1-8B shape, batch 1 and 32, once per
#   $BENCH_VARIANTS entry), tp (on nvidia-h200-x2: gpu-check --tp-size 2 and bench decode at tp 2
#   through NCCL), lora (loom bench lora-kernels, the issue's table for csgmv, sgmv and fused, and bench
#   decode with 8 rank-16 adapters at batch 1 and 32), ops (gpu-check --ops-only), lora-many (bench
#   lora-kernels at 106 and 160 decode rows over 29 to 128 adapters, shrink segments on and off), ncu (Nsight Compute on
#   batch-32 decode kernels: attention, argmax, cuBLASLt), sass (whether cuBLASLt's GEMMs wait for the previous grid), slora (scripts/slora_recipe.sh
#   at n = 8 with rank 16 and n = 128 with ranks 8-64, alpha 0.3, each under $OUT/slora-nN, or $SLORA_GOALS; LOOM_*
#   settings in the environment reach its servers, e.g. LOOM_SIDE_STREAM=1), tune (bench decode at batch 32 with
#   --tune-gemms and without, with no adapters and with 8 fused rank-16 adapters), serve-8b (loom serve on
#   random Llama-3.1-8B weights with $SERVE_ARGS, waves of 1, 8 and 32 requests, the log in $OUT), trace (CUPTI
#   kernel timelines of graph replays, scripts/gpu/trace: bench lora-kernels fused at rank 64 and 32 tokens,
#   bench decode at batch 32; trace-*.txt summaries, trace-*.json with one replay's timeline), ab (an A/B of
#   CUDA-backend settings: each $AB_VARIANTS entry NAME:VAR=VALUE,… traced once at batch 32 as in trace, then
#   bench decode at batch ${BENCH_BATCHES:-32} for every entry in turn, then in reverse, with $BENCH_ARGS; ab-trace-NAME.json,
#   bench-decode-ab-NAME-ROUND.json). Default: hf check
#   serve bench. Results land in $OUT (default /tmp/out; the device returns at most 8 files, so tar
#   them): gpu-check.json, bench-decode-llama-3.1-8b-NAME.json per bench variant, hf_reference.log,
#   gpu-check.log, bench.log, nvidia-smi.txt; with tp, gpu-check-tp2.json and
#   bench-decode-llama-3.1-8b-tp2.json; with lora, bench-lora-kernels.json,
#   bench-decode-llama-3.1-8b-lora8-r16-BACKEND.json per $LORA_BACKENDS entry (csgmv fused), bench-lora.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-device}

if [ "$mode" = build ]; then
    package=${2:-.}
    product=${3:-loom}
    (cd "$package" && swift build -c release --static-swift-stdlib --product "$product") || exit 1
    bin=$(cd "$package" && swift build -c release --static-swift-stdlib --product "$product" --show-bin-path)/$product
    mkdir -p .device
    strip -o .device/loom "$bin" && xz -9 -f -T2 .device/loom && ls -la .device/
    git rev-parse --short HEAD > .device/commit 2>/dev/null
    # The kernel-timeline library (scripts/gpu/trace) beside it; the binary does not need it.
    bash scripts/gpu/trace/build.sh > /dev/null || echo "scripts/gpu/trace/build.sh failed: no .device/trace"
    exit 0
fi

shift || true
phases=${*:-hf check serve bench}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
xz -dc .device/loom.xz > /tmp/loom && chmod +x /tmp/loom || exit 1
export LOOM_COMMIT=$(cat .device/commit 2>/dev/null || echo unknown)
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
models=()
# Sets $name and the array $settings (VAR=VALUE words for env) from a variant NAME[:VAR=VALUE,…].
variant_settings() {
    name=${1%%:*}; settings=(); [ "$name" != "$1" ] && IFS=, read -ra settings <<< "${1#*:}"
}
# The tokens/s rows of a bench decode result, one line each.
print_decode_rows() {
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); [print(f'  batch {x[\"batch\"]:3d} {x[\"tokens_per_s\"]:9.1f} tok/s floor {x[\"floor_tokens_per_s\"]:9.1f} ({x[\"fraction_of_floor\"]:.3f}) {x[\"ms_per_step\"]:.3f} ms/step distinct {x[\"distinct_tokens_seq0\"]}') for x in r['rows'] if 'tokens_per_s' in x]" "$1"
}
for phase in $phases; do
    case $phase in
    hf)
        timeout 200 python3 scripts/gpu/hf_reference.py --out /tmp/hfref > "$OUT/hf_reference.log" 2>&1
        echo "hf_reference: exit $?"; tail -8 "$OUT/hf_reference.log"
        ;;
    check)
        for d in /tmp/hfref/*/; do [ -f "$d/reference.json" ] && models+=(--model "$d"); done
        timeout 240 /tmp/loom gpu-check --output "$OUT/gpu-check.json" "${models[@]}" > /dev/null 2> "$OUT/gpu-check.log"
        echo "gpu-check: exit $?"; tail -12 "$OUT/gpu-check.log"
        python3 - "$OUT/gpu-check.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for o in r["ops"]:
    print(f'{"ok  " if o["pass"] else "FAIL"} {o["op"]:22s} rel {o.get("rel_l2", 0):.2e} max {o.get("max_abs", 0):.2e} {o.get("detail", "")}')
for m in r.get("models", []):
    print(f'{"ok  " if m["pass"] else "FAIL"} {m["model"]}: {m.get("summary", m.get("error"))}')
print("pass:", r["pass"])
PY
        ;;
    serve)
        # loom serve on the GPU with mixed adapters, checked through HTTP against PEFT's references
        # ($SERVE_LORA_BACKEND, default csgmv; $SERVE_ARGS added, e.g. --tune-gemms).
        for m in llama-tiny qwen2-tiny; do
            adapters=$(ls Fixtures/models/$m/adapters | sed "s|.*|&=Fixtures/models/$m/adapters/&|" | tr '\n' ' ')
            /tmp/loom serve --device cuda --tp-size "${SERVE_TP:-1}" --lora-backend "${SERVE_LORA_BACKEND:-csgmv}" --model-path Fixtures/models/$m --lora-paths $adapters \
                --max-loras-per-batch 4 --port 30000 ${SERVE_ARGS:-} > "$OUT/serve-$m.log" 2>&1 &
            pid=$!
            for _ in $(seq 120); do curl -sf localhost:30000/health > /dev/null && break; sleep 0.5; done
            timeout 120 python3 scripts/gpu/serve_check.py --model Fixtures/models/$m > "$OUT/serve-check-$m-tp${SERVE_TP:-1}.json"
            echo "serve-check $m: exit $?"; python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ('worst_top5_logprob_diff','all_tokens_equal','pass')}); [print(x) for x in r['rows']]" "$OUT/serve-check-$m-tp${SERVE_TP:-1}.json"
            kill -TERM $pid; wait $pid; echo "serve exit after SIGTERM: $?"
        done
        ;;
    tp)
        # Tensor parallelism over GPUs 0 and 1 through NCCL (nvidia-h200-x2): fixture models with mixed
        # adapters at tp 2 against tp 1, the CPU and PEFT; then Llama-3.1-8B-shape decode at tp 1 and 2.
        export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
        if [ -z "${LOOM_LIBNCCL:-}" ] && ! ldconfig -p | grep -q 'libnccl.so.2 '; then
            LOOM_LIBNCCL=$(find /usr /opt -name 'libnccl.so.2' 2>/dev/null | head -1); export LOOM_LIBNCCL
        fi
        echo "libnccl: ${LOOM_LIBNCCL:-$(ldconfig -p | grep 'libnccl.so.2 ' | head -1)}"
        nvidia-smi topo -m | head -4
        tpmodels=()  # hf_reference.py's folders with adapters and a mixed batch, when the hf phase ran
        for d in /tmp/hfref/*/; do grep -q mixed_batches "$d/reference.json" 2>/dev/null && tpmodels+=(--model "$d"); done
        timeout 240 /tmp/loom gpu-check --tp-size 2 --output "$OUT/gpu-check-tp2.json" "${tpmodels[@]}" > /dev/null 2> "$OUT/gpu-check-tp2.log"
        echo "gpu-check tp2: exit $?"; grep -E "^tp |collectives|Fatal|error" "$OUT/gpu-check-tp2.log" | cut -c1-400
        bench() {  # name, args…
            local name=$1; shift
            echo "== bench $name" >> "$OUT/bench-tp.log"
            timeout 120 /tmp/loom bench decode --random-weights llama-3.1-8b --batch 1,32 --prompt-len 128 --new-tokens 128 "$@" \
                --output "$OUT/bench-decode-llama-3.1-8b-$name.json" > /dev/null 2>> "$OUT/bench-tp.log"
            echo "bench $name: exit $?"
            python3 -c "import json,sys; r=json.load(open(sys.argv[1])); [print(f'  tp {x[\"tp_size\"]} batch {x[\"batch\"]:3d} graphs {x[\"cuda_graphs\"]!s:5s} {x[\"tokens_per_s\"]:9.1f} tok/s floor {x[\"floor_tokens_per_s\"]:9.1f} ({x[\"fraction_of_floor\"]:.2f}) {x[\"ms_per_step\"]:.3f} ms/step distinct {x[\"distinct_tokens_seq0\"]}') for x in r['rows'] if 'tokens_per_s' in x]" "$OUT/bench-decode-llama-3.1-8b-$name.json" 2>&1 | tail -6
        }
        bench tp2 --tp-size 2 ${TP_BENCH_ARGS:-}
        tail -5 "$OUT/bench-tp.log"
        ;;
    trace)
        # Each kernel of the last replays of every CUDA graph, as CUPTI saw it on the device
        # (libloom_trace.so through CUDA_INJECTION64_PATH; built by `check.sh build`).
        lib=$PWD/.device/trace/libloom_trace.so
        [ -f "$lib" ] || { echo "trace: no $lib (check.sh build makes it)"; continue; }
        for run in "lk:bench lora-kernels --lora-backend fused --rows ${TRACE_ROWS:-decode:64:32:8}" \
                   "bd:bench decode --random-weights llama-3.1-8b --batch ${TRACE_BATCH:-32} --prompt-len 128 --new-tokens 64"; do
            name=${run%%:*}
            CUDA_INJECTION64_PATH=$lib LOOM_TRACE_OUT=/tmp/trace-$name.txt timeout 150 /tmp/loom ${run#*:} \
                --output "$OUT/trace-$name-bench.json" > "$OUT/trace-$name.log" 2>&1
            echo "trace $name: exit $?"
            python3 scripts/gpu/trace/summary.py /tmp/trace-$name.txt --json "$OUT/trace-$name.json" \
                > "$OUT/trace-$name.txt"
            head -30 "$OUT/trace-$name.txt"
        done
        ;;
    ab)
        # Settings compared on one machine: a CUPTI trace of each (where the trace library is here),
        # then the benches in turn twice, so a machine's drift reaches every variant alike.
        lib=$PWD/.device/trace/libloom_trace.so
        for variant in ${AB_VARIANTS:?AB_VARIANTS: NAME:VAR=VALUE,… entries}; do
            variant_settings "$variant"
            [ -f "$lib" ] || break
            env "${settings[@]}" CUDA_INJECTION64_PATH=$lib LOOM_TRACE_OUT=/tmp/ab-trace-$name.txt timeout 150 /tmp/loom bench decode \
                --random-weights llama-3.1-8b --batch 32 --prompt-len 128 --new-tokens 64 ${BENCH_ARGS:-} > "$OUT/ab-trace-$name.log" 2>&1
            echo "ab trace $name: exit $?"
            python3 scripts/gpu/trace/summary.py /tmp/ab-trace-$name.txt --json "$OUT/ab-trace-$name.json" | head -12
        done
        read -ra abOrder <<< "$AB_VARIANTS"
        for round in 1 2; do
            # The second round in reverse order (A B, then B A).
            [ $round = 2 ] && for ((i = 0, j = ${#abOrder[@]} - 1; i < j; i++, j--)); do t=${abOrder[i]}; abOrder[i]=${abOrder[j]}; abOrder[j]=$t; done
            for variant in "${abOrder[@]}"; do
                variant_settings "$variant"
                file="$OUT/bench-decode-ab-$name-$round.json"
                timeout 300 env "${settings[@]}" /tmp/loom bench decode --random-weights llama-3.1-8b --batch ${BENCH_BATCHES:-32} --prompt-len 128 \
                    --new-tokens 128 ${BENCH_ARGS:-} --output "$file" > /dev/null 2>> "$OUT/bench.log"
                echo "ab bench $name, round $round: exit $?"
                print_decode_rows "$file"
            done
        done
        ;;
    ops)
        timeout 200 /tmp/loom gpu-check --ops-only --output "$OUT/gpu-check-ops.json" > /dev/null 2> "$OUT/gpu-check-ops.log"
        echo "gpu-check --ops-only: exit $?"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); [print(('ok  ' if o['pass'] else 'FAIL'), o['op'], '%.2e' % o.get('rel_l2', 0), o.get('detail', '')) for o in r['ops'] if not o['pass'] or 'rope' in o['op'] or 'attention' in o['op']]; print('pass:', r['pass'])" "$OUT/gpu-check-ops.json"
        ;;
    bench)
        # One run per variant NAME[:VAR=VALUE,…] of $BENCH_VARIANTS (environment settings of the CUDA
        # backend, e.g. "new old:LOOM_GEMV_ROWS=0,LOOM_DECODE_ATTENTION=0"); by default one run. $BENCH_ARGS
        # is added to each (e.g. "--adapters 8 --rank 16 --lora-backend fused"), $BENCH_BATCHES replaces "1,32".
        for variant in ${BENCH_VARIANTS:-default}; do
            variant_settings "$variant"
            echo "== $variant ${BENCH_ARGS:-}" >> "$OUT/bench.log"
            timeout 300 env "${settings[@]}" /tmp/loom bench decode --random-weights llama-3.1-8b --batch ${BENCH_BATCHES:-1,32} --prompt-len 128 --new-tokens 128 ${BENCH_ARGS:-} \
                --output "$OUT/bench-decode-llama-3.1-8b-$name.json" > /dev/null 2>> "$OUT/bench.log"
            echo "bench $variant: exit $?"
            print_decode_rows "$OUT/bench-decode-llama-3.1-8b-$name.json"
        done
        ;;
    tune)
        # cuBLASLt's algorithms chosen in whole graph steps (--tune-gemms) and the heuristic's, at batch
        # ${BENCH_BATCHES:-32}, without adapters and with $TUNE_LORA_ARGS (8 fused rank-16 adapters), one
        # run each, tuned and untuned alternated: bench-decode-tune-{base,lora}-{tuned,heuristic}.json.
        for lora in base lora; do
            extra=(); [ $lora = lora ] && read -ra extra <<< "${TUNE_LORA_ARGS:---adapters 8 --rank 16 --lora-backend fused}"
            for tune in tuned heuristic; do
                flag=--tune-gemms; [ $tune = heuristic ] && flag=--no-tune-gemms
                file="$OUT/bench-decode-tune-$lora-$tune.json"
                timeout 300 /tmp/loom bench decode --random-weights llama-3.1-8b --batch ${BENCH_BATCHES:-32} --prompt-len 128 --new-tokens 128 \
                    "${extra[@]}" $flag --output "$file" > /dev/null 2>> "$OUT/bench.log"
                echo "tune $lora $tune: exit $?"
                python3 -c "import json,sys; r=json.load(open(sys.argv[1])); [print(f'  batch {x[\"batch\"]:3d} {x[\"tokens_per_s\"]:9.1f} tok/s ({x[\"fraction_of_floor\"]:.3f}) device {x[\"device_ms_per_step\"]:.3f} ms/step') for x in r['rows'] if 'tokens_per_s' in x]; [print(f'  {t[\"graph\"]}: heuristic {t[\"heuristic_step_ms\"]} tuned {t[\"tuned_step_ms\"]} kept {t[\"kept_tuned\"]}; ' + '; '.join(f'{s[\"m\"]}x{s[\"k\"]}x{s[\"batch\"]} {s[\"chosen\"]}' for s in t['shapes'])) for t in r.get('gemm_tunings', [])]" "$file"
            done
        done
        ;;
    lora)
        timeout 420 /tmp/loom bench lora-kernels --output "$OUT/bench-lora-kernels.json" > /dev/null 2> "$OUT/bench-lora.log"
        echo "lora-kernels: exit $?"; tail -16 "$OUT/bench-lora.log"
        for backend in ${LORA_BACKENDS:-csgmv fused}; do
            timeout 300 /tmp/loom bench decode --random-weights llama-3.1-8b --batch 1,32 --prompt-len 128 --new-tokens 128 \
                --adapters 8 --rank 16 --lora-backend $backend --output "$OUT/bench-decode-llama-3.1-8b-lora8-r16-$backend.json" > /dev/null 2>> "$OUT/bench-lora.log"
            echo "bench decode --adapters 8 --lora-backend $backend: exit $?"; tail -4 "$OUT/bench-lora.log"
        done
        ;;
    ncu)
        # Nsight Compute (--clock-control none) on eager batch-32 decode kernels of the 8B shape: the
        # decode attention, the argmax and the cuBLASLt GEMMs (every non-Loom kernel after the prefill's),
        # one CSV each under $OUT.
        profile() {  # name, ncu filter arguments…
            local name=$1; shift
            timeout 240 ncu --clock-control none "$@" --section SpeedOfLight --section Occupancy --section LaunchStats \
                --section WarpStateStats --section MemoryWorkloadAnalysis --csv \
                /tmp/loom bench decode --random-weights llama-3.1-8b --batch 32 --prompt-len 128 --new-tokens 4 --eager-only \
                > "$OUT/ncu-$name.csv" 2> "$OUT/ncu-$name.log"
            echo "ncu $name: exit $? ($(wc -l < "$OUT/ncu-$name.csv") lines)"
        }
        profile attention --kernel-name regex:loom_attention_decode --launch-skip 40 --launch-count 2
        profile argmax --kernel-name loom_argmax --launch-skip 2 --launch-count 1
        profile blas --kernel-name 'regex:^(?!loom_)' --launch-skip ${NCU_BLAS_SKIP:-136} --launch-count 10
        ;;
    sass)
        # Whether the cuBLASLt GEMM kernels of the decode graphs wait for their producers (griddepcontrol.wait,
        # SASS ACQBULK) before they read, which a programmatic edge into them would need (with cuBLAS 13.1 none
        # does). Each nvjet kernel of a batch-32 decode step, without and with 8 fused rank-16 adapters, through
        # Nsight Compute's SASS view.
        sass() {  # name, bench arguments…
            local name=$1; shift
            rm -f /tmp/sass-$name.ncu-rep
            timeout 240 ncu --clock-control none --kernel-name regex:nvjet --launch-skip ${SASS_SKIP:-129} --launch-count 5 \
                --section SourceCounters -o /tmp/sass-$name /tmp/loom bench decode --random-weights llama-3.1-8b --batch 32 \
                --prompt-len 128 --new-tokens 4 --eager-only "$@" > "$OUT/sass-$name.log" 2>&1
            ncu -i /tmp/sass-$name.ncu-rep --page source --print-source sass --csv > "$OUT/sass-$name.csv" 2>> "$OUT/sass-$name.log"
            # Per kernel ("Kernel Name" rows start each), its SASS lines and those that wait or trigger.
            python3 - "$OUT/sass-$name.csv" <<'PY'
import re, sys
stats, kernel = {}, None
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r'"Kernel Name","([^"]+)"', line)
    if m:
        kernel = m.group(1); stats[kernel] = {"sass": 0, "ACQBULK": 0, "PREEXIT": 0}
    elif kernel and line.startswith('"0x'):
        stats[kernel]["sass"] += 1
        for op in ("ACQBULK", "PREEXIT"): stats[kernel][op] += op in line
for k, v in stats.items(): print(f"  sass: {k}: {v['sass']} instructions, ACQBULK {v['ACQBULK']}, PREEXIT {v['PREEXIT']}")
PY
        }
        sass base
        sass fused --adapters 8 --rank 16 --lora-backend fused
        ;;
    lora-many)
        # S-LoRA's decode: 160 rows over 64 or 128 adapters, and the recipe's mean step (106 rows over 29
        # adapters, ranks up to 64) (csgmv), beside their byte floors; again with the shrink's segment
        # stream off (LOOM_LORA_SHRINK_SEGMENTS=0).
        manyRows=decode:16:160:64,decode:32:160:64,decode:64:160:64,decode:32:160:128,decode:16:106:29,decode:64:106:29
        for variant in on off; do
            timeout 300 env LOOM_LORA_SHRINK_SEGMENTS=$([ $variant = on ] && echo 32 || echo 0) /tmp/loom bench lora-kernels --lora-backend csgmv \
                --rows $manyRows --output "$OUT/bench-lora-kernels-many-$variant.json" > /dev/null 2> "$OUT/bench-lora-many-$variant.log"
            echo "lora-kernels (many adapters, shrink segments $variant): exit $?"; grep -E "^(decode|prefill) " "$OUT/bench-lora-many-$variant.log" | sort -u
        done
        ;;
    serve-8b)
        # loom serve on random Llama-3.1-8B weights with $SERVE_ARGS (e.g. --tune-gemms), the log written
        # to $OUT/serve-8b.log as it runs; waves of 1, 8 and 32 concurrent /generate requests (64 new
        # tokens, each request at most 60 s), each wave twice: the first of a size may capture (and
        # tune) its graph, the second replays. Prints each wave's seconds and the server's graph log lines.
        /tmp/loom serve --random-weights llama-3.1-8b --device cuda --port 30000 ${SERVE_ARGS:-} > "$OUT/serve-8b.log" 2>&1 &
        pid=$!
        for _ in $(seq 240); do curl -sf localhost:30000/health > /dev/null && break; sleep 0.5; done
        for c in 1 1 8 8 32 32; do
            t0=$(date +%s.%N); pids=()
            for i in $(seq "$c"); do
                curl -s --max-time 60 localhost:30000/generate -H 'Content-Type: application/json' -o "$OUT/serve-8b-last.json" \
                    -d "{\"input_ids\":[1,$((100 + i)),200,300,400,500,600,700],\"sampling_params\":{\"max_new_tokens\":64,\"temperature\":0,\"ignore_eos\":true}}" &
                pids+=($!)
            done
            wait "${pids[@]}"  # the requests only: a bare wait would wait for the server too
            echo "serve-8b wave of $c: $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s"
        done
        head -c 200 "$OUT/serve-8b-last.json"; echo
        grep -E "GEMM|graph|error|Fatal" "$OUT/serve-8b.log" | cut -c1-300 | head -40
        kill -TERM $pid; wait $pid; echo "serve exit after SIGTERM: $?"
        ;;
    slora)
        # The S-LoRA recipe's two goals, each against its own run without LoRA (about 2.5 minutes each):
        # 8 rank-16 adapters, then 128 of ranks 8-64, both at alpha 0.3.
        xz -dc .device/loom.xz > .device/loom && chmod +x .device/loom
        common=(RATE=40 NUM_PROMPTS=400 SERVE_ARGS="--context-length 4096 --max-total-tokens 262144" DISTINCT_WEIGHTS=8 ALPHAS=0.3)
        # SLORA_GOALS="N RANKS SLOTS;…" runs other goals (e.g. "8 16 32" for n = 8 only).
        IFS=';' read -ra goals <<< "${SLORA_GOALS:-8 16 32;128 8,16,32,64 128}"
        for goal in "${goals[@]}"; do
            read -r n ranks slots <<< "$goal"
            rm -rf /tmp/slora-n$n
            env OUT="$OUT" RESULTS=/tmp/slora-n$n "${common[@]}" NS=$n RANKS=$ranks MAX_LORAS_PER_BATCH=$slots \
                timeout 280 bash scripts/slora_recipe.sh > "$OUT/slora-n$n.log" 2>&1
            echo "slora recipe n = $n: exit $?"; cat /tmp/slora-n$n/summary.md 2>/dev/null; cat /tmp/slora-n$n/*.steps.json 2>/dev/null
            cp -r /tmp/slora-n$n "$OUT/" 2>/dev/null
        done
        ;;
    esac
done
