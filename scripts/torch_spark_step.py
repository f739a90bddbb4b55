"""Time one SparK pretraining step in PyTorch on CPU: the "PyTorch original" side of our benchmarks.

This is a re-implementation of SparK's pretraining model written from ../shared/SPARK.md; it is NOT
SparK's code (keyu-tian/SparK is not available here). It computes what the official code computes:
masked dense ops ("Sparse*" wrappers reading a module-global active map), gather/BN1d/scatter sparse BN,
densify (sparse BN, mask tokens, 1x1/3x3 projections), LightDecoder and the per-patch-normalised loss.
The printed parameter count must equal SPARK.md section 9; that is the check that the model is right.

    /tmp/nnvenv/bin/python scripts/torch_spark_step.py --model resnet18 --size 96 --batch 16 \
        --decoder-width 768 --threads 2 --steps 10 --warmup 2 [--malloc tuned] [--optim lamb] [--autocast bf16]
    /tmp/nnvenv/bin/python scripts/torch_spark_step.py --dense-resnet --model resnet50 --size 224 --batch 8

A step is fwd (incl. random masking) + bwd + grad-norm clip 5 + AdamW betas (0.9, 0.95), as in the SparK
rows of ../shared/peers/RESULTS.md; `--optim lamb` is LAMB as SPARK.md 7.1 (clip 5 inside LAMB).
`--dense-resnet` times a plain torchvision classifier (cross-entropy on random labels, AdamW, no clip,
like RESULTS.md's dense rows) so that today's machine speed can be compared with that day's.
Use --warmup 2 or more: the first steps build oneDNN primitives and grow the heap.

Malloc: RESULTS.md's "tuned" rows ran with glibc env
    MALLOC_TRIM_THRESHOLD_=68719476736 MALLOC_MMAP_MAX_=0
(freed memory is never returned to the kernel, so no page faults per step). Either export those two
variables yourself, or pass `--malloc tuned`, which re-executes this script with exactly them set.
The malloc setting in effect is printed with the results; compare tuned rows with tuned rows.

Deviations from the official code that are guesses, not facts from SPARK.md: torchvision's ResNet
instead of timm 0.5.4's (same layers and parameter names; timm's DropPath is re-added, rate 0.05 for
resnet50 and 0 for resnet18 as in RESULTS.md's runs); AdamW lr/weight decay values (irrelevant to time);
the SparK BN is plain BatchNorm (single process, as SparK forces sbn=False there).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
import types

TUNED_MALLOC = {"MALLOC_TRIM_THRESHOLD_": "68719476736", "MALLOC_MMAP_MAX_": "0"}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["resnet18", "resnet50"], default="resnet18")
    ap.add_argument("--size", type=int, default=96, help="input side, a multiple of 32")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--decoder-width", type=int, default=768)
    ap.add_argument("--mask-ratio", type=float, default=0.6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--optim", choices=["adamw", "lamb", "sgd"], default="adamw")
    ap.add_argument("--clip", type=float, default=None,
                    help="external grad-norm clip (default 5 for SparK+AdamW, off for dense/LAMB)")
    ap.add_argument("--drop-path", type=float, default=None,
                    help="timm drop_path_rate (default: 0.05 resnet50, 0 resnet18, as SparK/RESULTS.md)")
    ap.add_argument("--dense-resnet", action="store_true",
                    help="time a plain torchvision classifier instead (calibration)")
    ap.add_argument("--malloc", choices=["env", "tuned"], default="env",
                    help="tuned: re-exec with RESULTS.md's glibc settings; env: leave as is")
    ap.add_argument("--autocast", choices=["off", "bf16"], default="off",
                    help="bf16: torch.autocast('cpu', bfloat16) around the forward (its backward follows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="append one JSON line with the result to this file")
    return ap.parse_args()


ARGS = parse_args()
# glibc reads its MALLOC_* tunables at start-up, so they can only be applied by starting again.
if ARGS.malloc == "tuned" and any(os.environ.get(k) != v for k, v in TUNED_MALLOC.items()):
    os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **TUNED_MALLOC})

import torch  # noqa: E402  (after the possible re-exec: keep the first start cheap)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Sparse encoder (SPARK.md 3.1): a module-global active map (B,1,f,f) read by every sparse layer,
# upsampled by repeat_interleave at each layer, exactly as the official encoder.py does.
_cur_active = None


def _active_ex_or_ii(h, w, returning_active_ex=True):
    rh, rw = h // _cur_active.shape[-2], w // _cur_active.shape[-1]
    ex = _cur_active.repeat_interleave(rh, dim=2).repeat_interleave(rw, dim=3)
    return ex if returning_active_ex else ex.squeeze(1).nonzero(as_tuple=True)


class SparseConv2d(nn.Conv2d):
    def forward(self, x):
        x = super().forward(x)
        x *= _active_ex_or_ii(x.shape[2], x.shape[3])  # dense conv, then zero the inactive sites
        return x


class SparseMaxPooling(nn.MaxPool2d):
    def forward(self, x):
        x = super().forward(x)
        x *= _active_ex_or_ii(x.shape[2], x.shape[3])
        return x


class SparseBatchNorm2d(nn.BatchNorm1d):
    """BN statistics over active positions only: gather (N,C) rows, BatchNorm1d, scatter into zeros."""

    def forward(self, x):
        ii = _active_ex_or_ii(x.shape[2], x.shape[3], returning_active_ex=False)
        bhwc = x.permute(0, 2, 3, 1)
        nc = super().forward(bhwc[ii])
        out = torch.zeros_like(bhwc)
        out[ii] = nc
        return out.permute(0, 3, 1, 2)


def dense_to_sparse(m):
    """Same hyper-parameters and copied state (names unchanged), like SparseEncoder.dense_model_to_sparse."""
    out = m
    if isinstance(m, nn.Conv2d):
        out = SparseConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                           m.dilation, m.groups, m.bias is not None, m.padding_mode)
    elif isinstance(m, nn.MaxPool2d):
        out = SparseMaxPooling(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices,
                               m.ceil_mode)
    elif isinstance(m, nn.BatchNorm2d):
        out = SparseBatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    if out is not m:
        out.load_state_dict(m.state_dict())
    for name, child in m.named_children():
        out.add_module(name, dense_to_sparse(child))
    return out


def _drop_path(x, p, training):
    """timm 0.5.4 DropPath: drop whole samples of the residual branch, rescale the kept ones."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    r = (keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype)).floor_()
    return x.div(keep) * r


def _block_forward(self, x):
    """torchvision Basic/Bottleneck forward with timm's drop_path before the residual add."""
    idt = x if self.downsample is None else self.downsample(x)
    out = self.relu(self.bn1(self.conv1(x)))
    if hasattr(self, "conv3"):
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
    else:
        out = self.bn2(self.conv2(out))
    return self.relu(_drop_path(out, self.dp_rate, self.training) + idt)


def build_backbone(name, drop_path):
    # zero_init_residual: timm 0.5.x's default zero-init of each block's last BN gamma.
    cnn = getattr(torchvision.models, name)(weights=None, zero_init_residual=True)
    blocks = [b for layer in (cnn.layer1, cnn.layer2, cnn.layer3, cnn.layer4) for b in layer]
    for i, b in enumerate(blocks):  # timm: rate grows linearly with the block index, 0 for the first
        b.dp_rate = drop_path * i / (len(blocks) - 1)
        b.forward = types.MethodType(_block_forward, b)
    return cnn


def encoder_features(cnn, x):
    """SparK's resnet forward(hierarchical=True): layer1..layer4 outputs (strides 4, 8, 16, 32)."""
    x = cnn.maxpool(cnn.relu(cnn.bn1(cnn.conv1(x))))
    feats = []
    for layer in (cnn.layer1, cnn.layer2, cnn.layer3, cnn.layer4):
        x = layer(x)
        feats.append(x)
    return feats


# ---------------------------------------------------------------------------------------------
# LightDecoder (SPARK.md 5)
class UNetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up_sample = nn.ConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1, bias=True)
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.conv(self.up_sample(x))


class LightDecoder(nn.Module):
    def __init__(self, up_sample_ratio, width):
        super().__init__()
        n = round(math.log2(up_sample_ratio))
        ch = [width // 2**i for i in range(n + 1)]
        self.dec = nn.ModuleList([UNetBlock(a, b) for a, b in zip(ch[:-1], ch[1:])])
        self.proj = nn.Conv2d(ch[-1], 3, kernel_size=1, stride=1, bias=True)
        for m in self.modules():  # SparK's LightDecoder.initialize
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, to_dec):
        x = 0
        for i, blk in enumerate(self.dec):
            if i < len(to_dec) and to_dec[i] is not None:
                x = x + to_dec[i]  # additive skip at the block input
            x = blk(x)
        return self.proj(x)


# ---------------------------------------------------------------------------------------------
class SparK(nn.Module):
    def __init__(self, model, size, dec_width, mask_ratio, drop_path):
        super().__init__()
        self.ratio = 32
        self.f = size // self.ratio
        self.len_keep = round(self.f * self.f * (1 - mask_ratio))  # Python round: ties to even
        cnn = build_backbone(model, drop_path)
        cnn.fc, cnn.avgpool = nn.Identity(), nn.Identity()  # num_classes=0, global_pool=''
        self.sp_cnn = dense_to_sparse(cnn)
        last = [layer[-1] for layer in (cnn.layer1, cnn.layer2, cnn.layer3, cnn.layer4)]
        e_widths = [(b.conv3 if hasattr(b, "conv3") else b.conv2).out_channels for b in last]
        self.mask_tokens, self.densify_norms, self.densify_projs = (
            nn.ParameterList(), nn.ModuleList(), nn.ModuleList())
        d = dec_width
        for i in range(4):  # deepest level first
            e = e_widths.pop()
            tok = nn.Parameter(torch.zeros(1, e, 1, 1))
            nn.init.trunc_normal_(tok, mean=0, std=0.02, a=-0.02, b=0.02)
            self.mask_tokens.append(tok)
            self.densify_norms.append(SparseBatchNorm2d(e))  # densify_norm='bn'
            k = 1 if i == 0 else 3
            proj = nn.Conv2d(e, d, k, 1, k // 2, bias=True)
            self.densify_projs.append(nn.Identity() if i == 0 and e == d else proj)
            d //= 2
        self.dense_decoder = LightDecoder(self.ratio, dec_width)

    def mask(self, b):
        idx = torch.rand(b, self.f * self.f).argsort(dim=1)[:, : self.len_keep]
        m = torch.zeros(b, self.f * self.f, dtype=torch.bool).scatter_(1, idx, True)
        return m.view(b, 1, self.f, self.f)

    def patchify(self, x):
        b, c, p, f = x.shape[0], x.shape[1], self.ratio, self.f
        x = torch.einsum("bchpwq->bhwpqc", x.reshape(b, c, f, p, f, p))
        return x.reshape(b, f * f, c * p * p)

    def forward(self, inp):
        global _cur_active
        active = self.mask(inp.shape[0])
        _cur_active = active
        act_hw = active.repeat_interleave(self.ratio, 2).repeat_interleave(self.ratio, 3)
        feats = encoder_features(self.sp_cnn, inp * act_hw)
        feats.reverse()
        cur, to_dec = active, []
        for i, x in enumerate(feats):
            x = self.densify_norms[i](x)
            x = torch.where(cur.expand_as(x), x, self.mask_tokens[i].expand_as(x))
            to_dec.append(self.densify_projs[i](x))
            cur = cur.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        rec = self.dense_decoder(to_dec)
        t, r = self.patchify(inp), self.patchify(rec)
        t = (t - t.mean(dim=-1, keepdim=True)) / (t.var(dim=-1, keepdim=True) + 1e-6) ** 0.5
        err = ((r - t) ** 2).mean(dim=2)
        masked = active.logical_not().int().view(active.shape[0], -1)
        return err.mul_(masked).sum() / (masked.sum() + 1e-8)


# ---------------------------------------------------------------------------------------------
class Lamb(torch.optim.Optimizer):
    """LAMB as SPARK.md 7.1 (timm 0.5.4 lamb): global-norm clip inside, trust ratio for decayed params."""

    def __init__(self, params, lr, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.04, max_grad_norm=5.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.max_grad_norm = max_grad_norm

    @torch.no_grad()
    def step(self):
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        gnorm = torch.sqrt(sum(gr.pow(2).sum() for gr in grads))
        clip = torch.clamp(gnorm / self.max_grad_norm, min=1.0)
        for g in self.param_groups:
            b1, b2 = g["betas"]
            g["step"] = g.get("step", 0) + 1
            bc1, bc2 = 1 - b1 ** g["step"], 1 - b2 ** g["step"]
            for p in g["params"]:
                if p.grad is None:
                    continue
                gr = p.grad.div_(clip)
                st = self.state[p]
                if not st:
                    st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
                st["m"].mul_(b1).add_(gr, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(gr, gr, value=1 - b2)
                u = (st["m"] / bc1).div_((st["v"].sqrt() / math.sqrt(bc2)).add_(g["eps"]))
                if g["weight_decay"] != 0:
                    u.add_(p, alpha=g["weight_decay"])
                    wn, un = p.norm(2), u.norm(2)
                    u.mul_(torch.where((wn > 0) & (un > 0), wn / un, torch.ones_like(wn)))
                p.add_(u, alpha=-g["lr"])


def param_groups(model, wd):
    """SparK's no-decay rule: 1-D params, '.bias', mask tokens (and cls_token/pos_embed/gamma)."""
    no = ("cls_token", "pos_embed", "mask_token", "gamma")
    dec, nodec = [], []
    for n, p in model.named_parameters():
        (nodec if p.ndim == 1 or n.endswith(".bias") or any(k in n for k in no) else dec).append(p)
    return [dict(params=dec, weight_decay=wd), dict(params=nodec, weight_decay=0.0)]


def expected_params(model, dense, width):
    """SPARK.md 9 in closed form (backbone without fc + decoder + projections + norms + tokens)."""
    backbone = {"resnet18": 11_176_512, "resnet50": 23_508_032}[model]
    if dense:
        return backbone + {"resnet18": 513_000, "resnet50": 2_049_000}[model]
    e = {"resnet18": [512, 256, 128, 64], "resnet50": [2048, 1024, 512, 256]}[model]
    ch = [width // 2**i for i in range(6)]
    dec = sum(16 * a * a + a + 9 * a * a + 2 * a + 9 * a * b + 2 * b for a, b in zip(ch, ch[1:]))
    dec += ch[-1] * 3 + 3
    proj = sum(0 if i == 0 and c == ch[0] else c * ch[i] * (1 if i == 0 else 9) + ch[i]
               for i, c in enumerate(e))
    return backbone + dec + proj + 2 * sum(e) + sum(e)


def vm_hwm_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_hwm():
    try:  # "5" resets the peak RSS counter (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def main():
    a = ARGS
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dp = a.drop_path if a.drop_path is not None else (0.05 if a.model == "resnet50" else 0.0)
    if a.dense_resnet:
        model = build_backbone(a.model, 0.0)
        labels = torch.randint(0, 1000, (a.batch,))
        loss_fn = lambda x: F.cross_entropy(model(x), labels)  # noqa: E731
        what = f"dense torchvision {a.model} {a.size}^2 b{a.batch}"
        clip = a.clip or 0.0
    else:
        if a.size % 32:
            sys.exit(f"--size {a.size} is not a multiple of 32 (the mask patch)")
        model = SparK(a.model, a.size, a.decoder_width, a.mask_ratio, dp)
        loss_fn = model
        what = (f"SparK {a.model} {a.size}^2 b{a.batch} w{a.decoder_width} "
                f"(grid {model.f}x{model.f}, keep {model.len_keep}, drop_path {dp})")
        clip = a.clip if a.clip is not None else (5.0 if a.optim == "adamw" else 0.0)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    want = expected_params(a.model, a.dense_resnet, a.decoder_width)
    lr = 3.2e-3 * a.batch / 4096
    if a.optim == "adamw":
        opt = torch.optim.AdamW(param_groups(model, 0.04), lr=lr, betas=(0.9, 0.95))
    elif a.optim == "lamb":
        opt = Lamb(param_groups(model, 0.04), lr=lr, betas=(0.9, 0.95), max_grad_norm=5.0)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(a.batch, 3, a.size, a.size)

    def step():
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast == "bf16"):
            loss = loss_fn(x)
        loss = loss.float()
        t1 = time.perf_counter()
        opt.zero_grad()
        loss.backward()
        t2 = time.perf_counter()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        t3 = time.perf_counter()
        return loss.item(), ((t3 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    for _ in range(a.warmup):
        step()
    hwm_ok = reset_hwm()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rows = [step() for _ in range(a.steps)]
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / max(a.steps, 1)
    tot, fwd, bwd, upd = (list(c) for c in zip(*(r[1] for r in rows)))
    med = statistics.median(tot)
    malloc = "tuned" if all(os.environ.get(k) == v for k, v in TUNED_MALLOC.items()) else (
        "custom" if any(k in os.environ for k in TUNED_MALLOC) else "default")
    optim = a.optim + (f" + clip {clip:g}" if clip > 0 else "")
    if a.autocast != "off":
        what += f" autocast {a.autocast}"

    print(f"torch {torch.__version__}, {a.threads} threads, malloc {malloc}, {optim}, "
          f"{a.steps} steps after {a.warmup} warm-up, last loss {rows[-1][0]:.4f}")
    print(f"params {n_params:,} (SPARK.md 9 closed form {want:,}: "
          f"{'MATCH' if n_params == want else 'MISMATCH'})")
    print("| config | step ms median [min-max] | img/s | fwd / bwd / clip+opt ms | faults/step | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    print(f"| {what} | {med:.1f} [{min(tot):.1f}-{max(tot):.1f}] | {a.batch * 1e3 / med:.2f} | "
          f"{statistics.median(fwd):.1f} / {statistics.median(bwd):.1f} / {statistics.median(upd):.1f} | "
          f"{faults:.0f} | {vm_hwm_mb() if hwm_ok else float('nan'):.0f} |")
    if a.json:
        with open(a.json, "a") as fh:
            fh.write(json.dumps(dict(config=what, args=vars(a), malloc=malloc, params=n_params,
                                     expected_params=want, step_ms=tot, fwd_ms=fwd, bwd_ms=bwd,
                                     opt_ms=upd, median_ms=med, img_s=a.batch * 1e3 / med,
                                     minor_faults_per_step=faults)) + "\n")
    if n_params != want:
        sys.exit(1)


if __name__ == "__main__":
    main()
