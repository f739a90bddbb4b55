#!/usr/bin/env python3
"""Compile every CUDA kernel source with NVRTC and assemble it with ptxas, without a GPU.

For each engine/src/cuda/kernels/*.cu and each architecture (sm_80, sm_90): NVRTC (libnvrtc.so.13
from PyPI's nvidia-cuda-nvrtc==13.0.88) turns it into PTX with the same options the engine uses at
run time, then `ptxas -v` (nvidia-cuda-nvcc==13.0.88) assembles it and reports registers and
spills. Fails on any compile error, and on any spill in a kernel whose name marks it hot
(gemm, conv). Prints one line per kernel.

  python3 scripts/cuda-compile-check.py [--arch sm_80,sm_90] [files...]
"""
import argparse, ctypes, glob, os, re, subprocess, sys, tempfile

# Must equal the options in engine/src/cuda/compile.rs.
NVRTC_OPTIONS = ["--std=c++17", "--fmad=true"]
HOT = re.compile(r"gemm|conv")


def find_cu13():
    try:
        import nvidia  # namespace package from the PyPI wheels
    except ImportError:
        sys.exit("cuda-compile-check: PyPI's nvidia-cuda-nvrtc==13.0.88 and nvidia-cuda-nvcc==13.0.88 are not installed")
    for root in nvidia.__path__:
        d = os.path.join(root, "cu13")
        if os.path.exists(os.path.join(d, "lib", "libnvrtc.so.13")):
            return d
    sys.exit("cuda-compile-check: libnvrtc.so.13 not found under the nvidia wheels")


def nvrtc_compile(lib, src, name, arch):
    prog = ctypes.c_void_p()
    check = lambda rc, what: rc == 0 or sys.exit(f"{name}: nvrtc {what} failed ({rc})")
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None), "create")
    opts = NVRTC_OPTIONS + [f"--gpu-architecture=compute_{arch[3:]}"]
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        return None, log.value.decode(errors="replace")
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode(), log.value.decode(errors="replace")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="sm_80,sm_90")
    ap.add_argument("files", nargs="*")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    files = a.files or sorted(glob.glob(os.path.join(here, "..", "engine", "src", "cuda", "kernels", "*.cu")))
    cu13 = find_cu13()
    # libnvrtc dlopens its builtins by soname: load them first so no LD_LIBRARY_PATH is needed.
    ctypes.CDLL(os.path.join(cu13, "lib", "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(os.path.join(cu13, "lib", "libnvrtc.so.13"))
    ptxas = os.path.join(cu13, "bin", "ptxas")
    failures = 0
    for f in files:
        src = open(f).read()
        name = os.path.basename(f)
        for arch in a.arch.split(","):
            ptx, log = nvrtc_compile(lib, src, name, arch)
            if ptx is None:
                print(f"FAIL {name} {arch}: NVRTC:\n{log}")
                failures += 1
                continue
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "k.ptx")
                open(p, "w").write(ptx)
                r = subprocess.run([ptxas, f"-arch={arch}", "-v", p, "-o", os.path.join(d, "k.cubin")],
                                   capture_output=True, text=True)
            if r.returncode != 0:
                print(f"FAIL {name} {arch}: ptxas:\n{r.stderr}")
                failures += 1
                continue
            kernel = None
            for line in r.stderr.splitlines():
                m = re.search(r"Compiling entry function '(\w+)'", line)
                if m:
                    kernel = m.group(1)
                    spill = None
                m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
                if m and kernel:
                    spill = int(m.group(1)) + int(m.group(2))
                m = re.search(r"Used (\d+) registers", line)
                if m and kernel:
                    hot = bool(HOT.search(kernel))
                    bad = hot and spill
                    failures += bool(bad)
                    print(f"{'FAIL' if bad else 'ok  '} {name} {arch} {kernel}: {m.group(1)} registers, "
                          f"{spill or 0} bytes spilled{' (hot kernel)' if hot else ''}")
    print(f"cuda-compile-check: {len(files)} source(s), {failures} failure(s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
