#!/usr/bin/env bash
# Session 28's decode-GEMM probes, standalone CUDA C++ built with the device's nvcc (no Loom binary):
#   stream.cu  how fast 132 multiprocessors pull a decode GEMM's weight out of HBM, by access pattern
#   gemm.cu    decode GEMMs of our own at 32 rows (checked against an f32 reference) against cuBLASLt
#   split.cu   q/k/v and o as 2 to 4 concurrent cuBLASLt GEMMs over row blocks of W
# On the device: bash scripts/gpu/probe/run.sh   (text results under $OUT; about 30 s on a warm machine)
set -euo pipefail
cd "$(dirname "$0")"
build=${TMPDIR:-/tmp}/loom-probe
out=${OUT:-.}
mkdir -p "$build"
arch="-gencode=arch=compute_90a,code=sm_90a"
nvcc -O3 -std=c++17 $arch -o "$build/stream" stream.cu
nvcc -O3 -std=c++17 $arch -o "$build/gemm" gemm.cu -lcublasLt
nvcc -O3 -std=c++17 $arch -o "$build/split" split.cu -lcublasLt
"$build/stream" | tee "$out/probe-stream.txt"
"$build/gemm" all | tee "$out/probe-gemm.txt"     # every variant but the V6 diagnostic, the bulk-copy ones (V1) too
"$build/split" | tee "$out/probe-split.txt"
