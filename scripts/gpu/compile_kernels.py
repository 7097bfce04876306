#!/usr/bin/env python3
"""Compiles every kernel in Sources/CUDABackend/Kernels with NVRTC, as the CUDA backend does at run
time (sm_90a, C++17), without a GPU, and prints each kernel's registers, stack and spills from
ptxas (the whole log with --verbose). NVRTC from PyPI is enough:

    pip install --target /tmp/nvrtc nvidia-cuda-nvrtc==13.0.88
    LD_LIBRARY_PATH=/tmp/nvrtc/nvidia/cu13/lib python3 scripts/gpu/compile_kernels.py --lib /tmp/nvrtc/nvidia/cu13/lib

With --schedule NAME (and cuobjdump from PyPI, `pip install --target /tmp/cuobjdump nvidia-cuda-cuobjdump`,
then --cuobjdump /tmp/cuobjdump/nvidia/cu13/bin/cuobjdump), it also prints kernel NAME's SASS as one letter
an instruction of interest, in program order: L a global load, M a tensor-core MMA, B a branch. It shows
how many loads ptxas keeps in flight ahead of the MMAs: session 19 found the fused shrink's loop at 68
registers interleaving them (LLLLMMMLML...) where the 118-register build issued 16 loads, then 16 MMAs.

(`swift test` compiles them too where LOOM_LIBNVRTC is set; this script is for kernel work.)"""
import argparse, ctypes, glob, os, re, subprocess, sys, tempfile


def check(lib, status, what):
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        sys.exit(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=None, help="folder holding libnvrtc.so.*")
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--verbose", action="store_true", help="print ptxas's whole log")
    ap.add_argument("--schedule", default=None, help="a kernel whose loads, MMAs and branches to print in SASS order")
    ap.add_argument("--cuobjdump", default="cuobjdump", help="the cuobjdump to read SASS with (--schedule)")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    names = sorted(glob.glob(os.path.join(a.lib, "libnvrtc.so*"))) if a.lib else []
    lib = ctypes.CDLL(names[0] if names else "libnvrtc.so")
    root = os.path.join(os.path.dirname(__file__), "../../Sources/CUDABackend/Kernels")
    header = open(os.path.join(root, "common.cuh"), "rb").read()
    files = a.files or sorted(glob.glob(os.path.join(root, "*.cu")))
    failed = 0
    for path in files:
        prog = ctypes.c_void_p()
        check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), open(path, "rb").read(), os.path.basename(path).encode(), 1,
                                          (ctypes.c_char_p * 1)(header), (ctypes.c_char_p * 1)(b"common.cuh")), path)
        opts = [f"--gpu-architecture={a.arch}".encode(), b"--std=c++17", b"-default-device", b"-lineinfo", b"-Xptxas=-v"]
        rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
        text = log.value.decode(errors="replace")
        print(f"{'ok  ' if rc == 0 else 'FAIL'} {os.path.basename(path)}")
        if rc != 0 or a.verbose:
            print(text.strip())
        else:
            # ptxas -v: "Function properties for NAME", then the stack/spill line, then "Used N registers".
            for name, frame, registers in re.findall(r"Function properties for (\w+)\n.*?(\d+) bytes stack frame.*?\n.*?Used (\d+) registers", text):
                print(f"     {name}: {registers} registers, {frame} bytes of stack")
        failed += rc != 0
        if rc == 0 and a.schedule:
            print_schedule(lib, prog_cubin(lib, path, header, a.arch), a.schedule, a.cuobjdump)
    sys.exit(1 if failed else 0)


def prog_cubin(lib, path, header, arch):
    """The cubin of one file, compiled as the backend does."""
    prog = ctypes.c_void_p()
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), open(path, "rb").read(), os.path.basename(path).encode(), 1,
                                      (ctypes.c_char_p * 1)(header), (ctypes.c_char_p * 1)(b"common.cuh")), path)
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"-default-device", b"-lineinfo"]
    check(lib, lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts)), path)
    size = ctypes.c_size_t()
    check(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
    cubin = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return cubin.raw


def print_schedule(lib, cubin, name, cuobjdump):
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([cuobjdump, "-sass", "-fun", name, f.name], capture_output=True, text=True, check=True).stdout
    letters = []
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]{4}\*/\s*(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if not m:
            continue
        op = m.group(2)
        letters.append("L" if op.startswith("LDG") else "M" if op.startswith("HMMA") else "B" if op.startswith("BRA") else "")
    print(f"     {name}: {''.join(letters) or 'not found'}")


main()
