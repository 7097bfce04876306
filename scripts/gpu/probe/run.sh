#!/usr/bin/env bash
# Session 28's decode-GEMM probes, standalone CUDA C++ built with the device's nvcc (no Loom binary):
#   stream.cu  how fast 132 multiprocessors pull a decode GEMM's weight out of HBM, by access pattern
#   gemm.cu    decode GEMMs of our own at 32 rows (checked against an f32 reference) against cuBLASLt
#   split.cu   q/k/v and o as 2 to 4 concurrent cuBLASLt GEMMs over row blocks of W
# Session 29's:
#   shrink.cu  the fused prefill LoRA shrink: one dense cuBLASLt GEMM over every adapted slot against
#              a pointer-array batched GEMM over the segments, each against its own slot's A
# On the device: bash scripts/gpu/probe/run.sh [probe ...]   (all four by default; text results under
# $OUT; about 30 s on a warm machine)
set -euo pipefail
cd "$(dirname "$0")"
build=${TMPDIR:-/tmp}/loom-probe
out=${OUT:-.}
mkdir -p "$build"
arch="-gencode=arch=compute_90a,code=sm_90a"
probes=("$@")
[ ${#probes[@]} -gt 0 ] || probes=(stream gemm split shrink)
for p in "${probes[@]}"; do
    case $p in
        stream) nvcc -O3 -std=c++17 $arch -o "$build/stream" stream.cu
                "$build/stream" | tee "$out/probe-stream.txt" ;;
        gemm)   nvcc -O3 -std=c++17 $arch -o "$build/gemm" gemm.cu -lcublasLt
                "$build/gemm" all | tee "$out/probe-gemm.txt" ;;   # every variant but the V6 diagnostic, the bulk-copy ones (V1) too
        split)  nvcc -O3 -std=c++17 $arch -o "$build/split" split.cu -lcublasLt
                "$build/split" | tee "$out/probe-split.txt" ;;
        shrink) nvcc -O3 -std=c++17 $arch -o "$build/shrink" shrink.cu -lcublasLt
                "$build/shrink" | tee "$out/probe-shrink.txt" ;;
        *) echo "unknown probe: $p (stream, gemm, split, shrink)" >&2; exit 2 ;;
    esac
done
