#!/usr/bin/env bash
# Builds the kernel-timeline injection library into .device/trace/ with CUPTI 13.0 from PyPI (its
# libcupti.so.13 is copied beside it and found through $ORIGIN). Use on the device:
#   CUDA_INJECTION64_PATH=$PWD/.device/trace/libloom_trace.so LOOM_TRACE_OUT=/tmp/t.txt /tmp/loom bench …
#   python3 scripts/gpu/trace/summary.py /tmp/t.txt
set -euo pipefail
cd "$(dirname "$0")/../../.."
W=/tmp/loom-cupti
if [ ! -f $W/nvidia/cu13/lib/libcupti.so.13 ]; then
    python3 -m pip install --quiet --no-deps --target $W "nvidia-cuda-cupti==13.0.85"
fi
mkdir -p .device/trace
cp $W/nvidia/cu13/lib/libcupti.so.13 .device/trace/
cc -O2 -shared -fPIC -o .device/trace/libloom_trace.so scripts/gpu/trace/loom_trace.c \
    -L.device/trace -l:libcupti.so.13 -Wl,-rpath,'$ORIGIN'
ls -la .device/trace
