"""PyTorch CPU reference timings for the layer shapes of `spark bench conv` / `spark bench sparse`.

Run it in the same session as our benches (the machine is shared; only same-run ratios mean
anything). Needs torch from PyPI. Prints median ms over REPS runs after a warm-up.

    python3 scripts/torch_conv_bench.py [threads]
"""
import sys, time, statistics
import torch
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
REPS = 10
LAYERS = [  # name, cin, cout, k, stride, pad, groups, size
    ("conv3x3 64->64 @56", 64, 64, 3, 1, 1, 1, 56),
    ("conv3x3 256->256 @14", 256, 256, 3, 1, 1, 1, 14),
    ("conv1x1 256->64 @56", 256, 64, 1, 1, 0, 1, 56),
    ("stem7x7/s2 3->64 @224", 3, 64, 7, 2, 3, 1, 224),
    ("dw7x7 96ch @56", 96, 96, 7, 1, 3, 96, 56),
]


def median_ms(fn):
    fn()
    ts = []
    for _ in range(REPS):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def block_mask(b, size, ratio=0.6, cells=7, seed=0):
    """SparK-style mask: `ratio` of the cells x cells grid masked, upsampled to size x size."""
    g = torch.Generator().manual_seed(seed)
    keep = round(cells * cells * (1 - ratio))
    idx = torch.rand(b, cells * cells, generator=g).argsort(dim=1)[:, :keep]
    m = torch.zeros(b, cells * cells).scatter_(1, idx, 1.0).view(b, 1, cells, cells)
    rep = size // cells
    return m.repeat_interleave(rep, 2).repeat_interleave(rep, 3)


print(f"torch {torch.__version__}, {threads} threads, batch 8, median of {REPS} (ms)")
print("| layer | layout | fwd | fwd+bwd | masked (SparK) fwd+bwd |")
print("|---|---|---|---|---|")
for name, cin, cout, k, s, p, g, size in LAYERS:
    for layout in ["nchw", "channels_last"]:
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        x = torch.randn(8, cin, size, size).to(memory_format=fmt)
        w = torch.randn(cout, cin // g, k, k).to(memory_format=fmt)
        b = torch.randn(cout)
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        osz = (size + 2 * p - k) // s + 1
        m_in, m_out = block_mask(8, size), block_mask(8, osz)

        def fwd():
            with torch.no_grad():
                F.conv2d(x, w, b, s, p, 1, g)

        def fwd_bwd():
            F.conv2d(xg, wg, b, s, p, 1, g).sum().backward()

        def masked():
            (F.conv2d(xg * m_in, wg, b, s, p, 1, g) * m_out).sum().backward()

        print(f"| {name} | {layout} | {median_ms(fwd):.2f} | {median_ms(fwd_bwd):.2f} | {median_ms(masked):.2f} |")
