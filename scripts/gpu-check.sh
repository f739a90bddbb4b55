#!/usr/bin/env bash
# The GPU check, run on the GPU machine from binaries built here by scripts/build-gpu-bins.sh:
#   1. the CUDA parity tests (every kernel and op against its CPU twin; a skip is a failure),
#   2. our GPU bench (GEMM f32 / bf16, bandwidth),
#   3. PyTorch's numbers for the same products on the same GPU, in the same run.
# Prints one summary at the end. Under 8 minutes on an H200.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=target/gpu-bin
export SPARK_REQUIRE_CUDA=1 SPARK_KERNEL_CACHE=${SPARK_KERNEL_CACHE:-/tmp/spark-kernels}
echo "== machine"; nvidia-smi -L 2>/dev/null || true; date -u
echo "== 1. CUDA parity tests"
t0=$(date +%s)
timeout 150 "$bin/cuda-tests" --test-threads=1 2>&1 | tee /tmp/parity.log | grep -v "^test .* ok$" | tail -150
parity_rc=${PIPESTATUS[0]}
echo "== 1b. whole models on CUDA vs the CPU (ResNet-18/50, ConvNeXt V1/V2)"
timeout 150 "$bin/cuda-models-tests" --test-threads=1 --nocapture 2>&1 | tee -a /tmp/parity.log | grep -v "^test .* ok$" | tail -60
models_rc=${PIPESTATUS[0]}
[ "$parity_rc" = 0 ] && parity_rc=$models_rc
echo "== 1c. training on CUDA: LAMB / AdamW vs the CPU, a ResNet's loss curve"
timeout 120 "$bin/cuda-train-tests" --test-threads=1 --nocapture 2>&1 | tee -a /tmp/parity.log | grep -v "^test .* ok$" | tail -30
train_rc=${PIPESTATUS[0]}
[ "$parity_rc" = 0 ] && parity_rc=$train_rc
echo "parity: rc $parity_rc in $(( $(date +%s) - t0 )) s; $(grep -c ' ok$' /tmp/parity.log) ok, $(grep -c 'FAILED$' /tmp/parity.log) failed"
echo "== 2. spark-rs CUDA bench"
timeout 60 "$bin/cuda_bench" 2>&1 | tee /tmp/bench.log
echo "== 2b. dense training steps (forward + cross entropy + backward, no optimizer)"
for m in resnet50 convnext_tiny; do
  for p in f32 bf16; do timeout 90 "$bin/cuda_step" $m 128 224 5 $p 2>&1 | tee -a /tmp/bench.log; done
done
echo "== 2b'. the SparK step (official config: decoder 768, LAMB, clip 5), dense-masked encoder"
for p in f32 bf16; do timeout 120 "$bin/cuda_spark_step" resnet50 128 3 $p 2>&1 | tee -a /tmp/bench.log; done
echo "== 2c. the spark binary on CUDA: finetune, eval, predict (built-in photos)"
ft=/tmp/spark-ft; rm -rf "$ft"
( time timeout 120 "$bin/spark" finetune --device cuda --steps 64 --out "$ft" ) 2>&1 | tail -8
timeout 60 "$bin/spark" eval --device cuda -c "$ft/classifier.safetensors" 2>&1 | head -3
( time timeout 120 "$bin/spark" finetune --device cpu --steps 64 --out "$ft-cpu" ) 2>&1 | tail -4
echo "-- the main job's pretraining on the GPU (dense-masked) and on the CPU (sparse), 100 steps each"
rm -rf /tmp/spark-pt /tmp/spark-pt-cpu "$ft-cpu"
( time timeout 120 "$bin/spark" pretrain --device cuda --encoder dense-masked --steps 100 --out /tmp/spark-pt ) 2>&1 | tail -7
( time timeout 120 "$bin/spark" pretrain --device cpu --steps 100 --out /tmp/spark-pt-cpu ) 2>&1 | tail -5
echo "== 3. PyTorch (cuBLAS / cuDNN) on the same GPU, same run"
timeout 90 python3 - <<'PY' 2>&1 | tee /tmp/torch.log
import torch, time
torch.backends.cuda.matmul.allow_tf32 = False
def t(f, reps=10):
    for _ in range(3): f()
    torch.cuda.synchronize(); xs = []
    for _ in range(reps):
        s = time.perf_counter(); f(); torch.cuda.synchronize(); xs.append((time.perf_counter() - s) * 1e3)
    return sorted(xs)[len(xs) // 2]
print("| torch op | shape | ms | TFLOP/s or GB/s |\n|---|---|---|---|")
for n, dt in [(4096, torch.float32), (4096, torch.bfloat16), (8192, torch.bfloat16), (2048, torch.float32), (2048, torch.bfloat16)]:
    a = torch.randn(n, n, device="cuda", dtype=dt); b = torch.randn(n, n, device="cuda", dtype=dt)
    ms = t(lambda: a @ b)
    print(f"| matmul {str(dt)[6:]} | {n}^3 | {ms:.3f} | {2*n**3/ms/1e9:.1f} TFLOP/s |")
n = 64 << 20
x = torch.ones(n, device="cuda"); y = torch.ones(n, device="cuda")
ms = t(lambda: x + y, 20); print(f"| add f32 | {n} elements | {ms:.3f} | {12*n/ms/1e6:.0f} GB/s |")
ms = t(lambda: (x * x).sum(), 20); print(f"| x*x sum f32 | {n} elements | {ms:.3f} | {4*n/ms/1e6:.0f} GB/s |")
del x, y
try:
    import torchvision
    for name in ["resnet50", "convnext_tiny"]:
        for tf32 in [False, True]:
            torch.backends.cudnn.allow_tf32 = tf32; torch.backends.cuda.matmul.allow_tf32 = tf32
            m = getattr(torchvision.models, name)(num_classes=1000).cuda().train()
            xb = torch.randn(128, 3, 224, 224, device="cuda"); tb = torch.randint(0, 1000, (128,), device="cuda")
            def step():
                m.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(m(xb), tb).backward()
            torch.cuda.reset_peak_memory_stats()
            ms = t(step, 5)
            print(f"| torch {name} fwd+bwd {'tf32' if tf32 else 'f32'} | 128 x 224px | {ms:.1f} ms | {128/ms*1e3:.0f} img/s | peak {torch.cuda.max_memory_allocated()/2**30:.1f} GiB |")
            if tf32:
                def step_bf16():
                    m.zero_grad(set_to_none=True)
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        loss = torch.nn.functional.cross_entropy(m(xb), tb)
                    loss.backward()
                torch.cuda.reset_peak_memory_stats()
                ms = t(step_bf16, 5)
                print(f"| torch {name} fwd+bwd bf16 autocast | 128 x 224px | {ms:.1f} ms | {128/ms*1e3:.0f} img/s | peak {torch.cuda.max_memory_allocated()/2**30:.1f} GiB |")
            del m, xb
except Exception as e:
    print("torchvision step skipped:", e)
PY
echo "== 3b. the official SparK step on this GPU (../shared/peers/gpu_bench.py, same run)"
if [ -d target/peers ]; then
  PYTHONPATH=target/peers/pylib timeout 150 python3 target/peers/gpu_bench.py --spark-dir target/peers/spark-official \
    --sections model --iters 10 2>&1 | tee /tmp/peers.log | tail -15
fi
echo "== summary"
grep -E "^test result|panicked|FAILED" /tmp/parity.log | head -40
cat /tmp/bench.log /tmp/torch.log | grep "^|" | grep -v "^|---"
exit $parity_rc
