#!/usr/bin/env python3
"""Writes the PyTorch fixtures of spark-nn's weight tests into tests/data/nn/.

Needs torch, torchvision, safetensors (PyPI). Run once from the repository root:
    python scripts/make_nn_fixtures.py
Check that a file written by spark-nn loads into PyTorch with strict=True:
    python scripts/make_nn_fixtures.py --verify FILE {resnet18_w4|resnet50_w4|convnext_w8|convnextv2_w8}

Models are narrow (small files) but use torchvision's ResNet blocks and the official ConvNeXt
(V1 / V2) code, so key names and shapes equal the full models'. Each model gets random
non-default weights and BN running statistics; we store its state_dict, a fixed input, and
PyTorch's outputs in eval mode and in train mode (plus the BN running stats after that
train-mode forward). ConvNeXt-V1 is also stored under timm's newer key names.
"""
import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file, load_file
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "nn")


class NarrowResNet(nn.Module):
    """torchvision.models.ResNet with base width `w` instead of 64 (same names, same code)."""

    def __init__(self, block, layers, w=8, num_classes=10):
        super().__init__()
        self.inplanes = w
        self.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, w, layers[0])
        self.layer2 = self._make_layer(block, 2 * w, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * w, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * w, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * w * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# ---- official ConvNeXt (facebookresearch/ConvNeXt, ConvNeXt-V2), trimmed to the model code ----
class LayerNorm(nn.Module):
    def __init__(self, n, eps=1e-6, data_format="channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.eps, self.data_format, self.n = eps, data_format, (n,)

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.n, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x):
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    def __init__(self, dim, v2):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim) if v2 else None
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = None if v2 else nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x):
        inp = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.act(self.pwconv1(self.norm(x)))
        if self.grn is not None:
            x = self.grn(x)
        x = self.pwconv2(x)
        if self.gamma is not None:
            x = self.gamma * x
        return inp + x.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, depths, dims, num_classes=10, v2=False):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm(dims[0], data_format="channels_first"))
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm(dims[i], data_format="channels_first"), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)
                )
            )
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i], v2) for _ in range(depths[i])]) for i in range(4))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
        return self.head(self.norm(x.mean([-2, -1])))


def timm_names(sd):
    """Official ConvNeXt keys -> timm's newer names (what timm's checkpoint_filter_fn undoes)."""
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if k.startswith("downsample_layers.0."):
            nk = "stem." + ".".join(p[2:])
        elif k.startswith("downsample_layers."):
            nk = f"stages.{p[1]}.downsample." + ".".join(p[2:])
        elif k.startswith("stages."):
            rest = ".".join(p[3:])
            rest = rest.replace("dwconv.", "conv_dw.").replace("pwconv1.", "mlp.fc1.").replace("pwconv2.", "mlp.fc2.")
            nk = f"stages.{p[1]}.blocks.{p[2]}.{rest}"
        elif k.startswith("norm."):
            nk = "head." + k
        elif k.startswith("head."):
            nk = "head.fc." + k[5:]
        else:
            nk = k
        out[nk] = v
    return out


def build(arch):
    if arch == "resnet18_w4":
        return NarrowResNet(BasicBlock, [2, 2, 2, 2], w=4)
    if arch == "resnet50_w4":
        return NarrowResNet(Bottleneck, [1, 1, 1, 1], w=4)
    if arch == "convnext_w8":
        return ConvNeXt([1, 1, 2, 1], [8, 16, 32, 64])
    if arch == "convnextv2_w8":
        return ConvNeXt([1, 1, 2, 1], [8, 16, 32, 64], v2=True)
    raise SystemExit(f"unknown arch {arch}")


def randomize(model, g):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1 or "grn" in name:  # norms, biases, layer scale, GRN: off their defaults
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)


def make(arch, g):
    model = build(arch)
    randomize(model, g)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{arch}.safetensors"))
    if arch == "convnext_w8":
        save_file(timm_names(sd), os.path.join(OUT, f"{arch}_timm.safetensors"))
    x = torch.randn(2, 3, 64, 64, generator=g)
    io = {"input": x}
    with torch.no_grad():
        model.eval()
        io["output_eval"] = model(x)
        model.train()
        io["output_train"] = model(x)
        for k, v in model.state_dict().items():
            if k.endswith("running_mean") or k.endswith("running_var"):
                io["after_train." + k] = v.clone()
    save_file(io, os.path.join(OUT, f"{arch}_io.safetensors"))
    print(arch, sum(p.numel() for p in model.parameters()), "params")


def verify(path, arch):
    model = build(arch)
    sd = load_file(path)
    sd = {k: (v.long() if k.endswith("num_batches_tracked") else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    print(f"{path}: loads into {arch} with strict=True")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--verify", nargs=2, metavar=("FILE", "ARCH"))
    a = ap.parse_args()
    if a.verify:
        return verify(*a.verify)
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for arch in ["resnet18_w4", "resnet50_w4", "convnext_w8", "convnextv2_w8"]:
        make(arch, g)


if __name__ == "__main__":
    main()
