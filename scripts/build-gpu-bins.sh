#!/usr/bin/env bash
# Builds, strips and gathers what scripts/gpu-check.sh runs on the GPU machine (which has no Rust
# toolchain) into target/gpu-bin/: the CUDA parity test binaries, the GPU benches and `spark`.
# Then, with the device tool: carry ["target/gpu-bin"], run `bash scripts/gpu-check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-bin
rm -rf "$out" && mkdir -p "$out"
# The path of a test binary: `test_binary PACKAGE TEST`.
test_binary() {
  cargo test --release -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null | python3 -c '
import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$2"
}
cp "$(test_binary spark-engine cuda)" "$out/cuda-tests"
cp "$(test_binary spark-nn cuda_models)" "$out/cuda-models-tests"
cp "$(test_binary spark cuda_train)" "$out/cuda-train-tests"
cargo build --release -p spark-engine --example cuda_bench -p spark-nn --example cuda_step -p spark --example cuda_spark_step
cp target/release/examples/{cuda_bench,cuda_step,cuda_spark_step} "$out/"
cargo build --release -p spark-cli
cp target/release/spark "$out/"
strip "$out"/*
ls -la "$out"

# The peers, run in the same GPU session: the official SparK code and its benchmark script from
# ../shared/peers (imported there, not copied into the repo), with timm 0.5.4 (pure Python,
# from PyPI) that the official code needs. Carry ["target/gpu-bin", "target/peers"].
peers=target/peers
rm -rf "$peers" && mkdir -p "$peers/pylib"
cp -r ../shared/peers/spark-official ../shared/peers/gpu_bench.py "$peers/"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$peers/wheels" timm==0.5.4
python3 -m zipfile -e "$peers"/wheels/timm-0.5.4-py3-none-any.whl "$peers/pylib"
du -sh "$out" "$peers"
