"""PyTorch reference of the released Res2Net-50 26w_4s, TEA and torchvision ResNet-50 code.

The modules follow the released implementations line by line (module names, registration order,
forward semantics), so their `state_dict()` has exactly the released layout
(`tests/data/pytorch_state_dicts.json` lists it). Depth and width can be reduced
for fast tests: `stage_sizes` sets the blocks per stage, `stem_width` and `planes` the widths.

Input layout: images (N, 3, H, W); videos (N, T, 3, H, W), frames of a video consecutive along
the batch axis inside the backbone, as in the released TSN wrapper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

FULL_STAGE_SIZES = (3, 4, 6, 3)
FULL_PLANES = (64, 128, 256, 512)


class MEModule(nn.Module):
    """Motion excitation: gate `sigmoid(y) - 0.5` from feature differences of adjacent frames."""

    def __init__(self, channel: int, reduction: int = 16, n_segment: int = 8):
        super().__init__()
        self.channel = channel
        self.reduction = reduction
        self.n_segment = n_segment
        reduced = channel // reduction
        self.conv1 = nn.Conv2d(channel, reduced, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(reduced)
        self.conv2 = nn.Conv2d(
            reduced, reduced, kernel_size=3, padding=1, groups=reduced, bias=False
        )
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.sigmoid = nn.Sigmoid()
        self.pad = (0, 0, 0, 0, 0, 0, 0, 1)
        self.conv3 = nn.Conv2d(reduced, channel, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottleneck = self.bn1(self.conv1(x))  # (NT, C/r, H, W)
        reshaped = bottleneck.view((-1, self.n_segment, *bottleneck.size()[1:]))
        t_fea, _ = reshaped.split([self.n_segment - 1, 1], dim=1)
        conv_bottleneck = self.conv2(bottleneck)
        reshaped_conv = conv_bottleneck.view((-1, self.n_segment, *conv_bottleneck.size()[1:]))
        _, t_plus_one_fea = reshaped_conv.split([1, self.n_segment - 1], dim=1)
        diff = t_plus_one_fea - t_fea  # (N, T-1, C/r, H, W)
        diff = nn.functional.pad(diff, self.pad, mode="constant", value=0)
        diff = diff.view((-1, *diff.size()[2:]))  # (NT, C/r, H, W)
        y = self.bn3(self.conv3(self.avg_pool(diff)))
        y = self.sigmoid(y) - 0.5
        return x + x * y.expand_as(x)


class ShiftModule(nn.Module):
    """Channel-wise temporal conv (Conv1d weight (C, 1, 3), zero padding 1 along time).

    `mode='shift'`: the first `C // n_div` channels take the next frame (0, 0, 1), the next
    `C // n_div` the previous one (1, 0, 0), the rest are kept (0, 1, 0); `'fixed'`: identity.
    """

    def __init__(self, input_channels: int, n_segment: int = 8, n_div: int = 8, mode="shift"):
        super().__init__()
        self.input_channels = input_channels
        self.n_segment = n_segment
        self.fold_div = n_div
        self.fold = input_channels // n_div
        channels = self.fold_div * self.fold
        self.conv = nn.Conv1d(
            channels, channels, kernel_size=3, padding=1, groups=channels, bias=False
        )
        weight = self.conv.weight.data
        if mode == "shift":
            weight.zero_()
            weight[: self.fold, 0, 2] = 1
            weight[self.fold : 2 * self.fold, 0, 0] = 1
            if 2 * self.fold < input_channels:
                weight[2 * self.fold :, 0, 1] = 1
        elif mode == "fixed":
            weight.zero_()
            weight[:, 0, 1] = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.size()
        n_batch = nt // self.n_segment
        x = x.view(n_batch, self.n_segment, c, h, w).permute(0, 3, 4, 2, 1)
        x = self.conv(x.contiguous().view(n_batch * h * w, c, self.n_segment))
        x = x.view(n_batch, h, w, c, self.n_segment).permute(0, 4, 3, 1, 2)
        return x.contiguous().view(nt, c, h, w)


class Bottle2neck(nn.Module):
    """Res2Net bottleneck (official Res2Net repository), scale 4, base width 26."""

    expansion = 4

    def __init__(
        self, inplanes, planes, stride=1, downsample=None, base_width=26, scale=4, stype="normal"
    ):
        super().__init__()
        width = math.floor(planes * (base_width / 64.0))
        self.conv1 = nn.Conv2d(inplanes, width * scale, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = 1 if scale == 1 else scale - 1
        if stype == "stage":
            self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(self.nums))
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stype = stype
        self.scale = scale
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        outs = []
        for i in range(self.nums):
            sp = spx[i] if i == 0 or self.stype == "stage" else outs[-1] + spx[i]
            outs.append(self.relu(self.bns[i](self.convs[i](sp))))
        out = torch.cat(outs, 1)
        if self.scale != 1 and self.stype == "normal":
            out = torch.cat((out, spx[self.nums]), 1)
        elif self.scale != 1 and self.stype == "stage":
            out = torch.cat((out, self.pool(spx[self.nums])), 1)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class Bottle2neckShift(nn.Module):
    """TEA block of the released code: Res2Net bottleneck with ME and MTA."""

    expansion = 4

    def __init__(
        self,
        inplanes,
        planes,
        stride=1,
        downsample=None,
        base_width=26,
        scale=4,
        stype="normal",
        n_segment=8,
    ):
        super().__init__()
        width = math.floor(planes * (base_width / 64.0))
        self.me = MEModule(width * scale, reduction=16, n_segment=n_segment)
        self.conv1 = nn.Conv2d(inplanes, width * scale, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = 1 if scale == 1 else scale - 1
        if stype == "stage":
            self.pool = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
            for _ in range(self.nums)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(self.nums))
        shifts = [
            ShiftModule(width, n_segment=n_segment, n_div=2, mode="fixed") for _ in range(self.nums)
        ]
        shifts.append(ShiftModule(width, n_segment=n_segment, n_div=2, mode="shift"))
        self.shifts = nn.ModuleList(shifts)
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stype = stype
        self.scale = scale
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.me(out)
        spx = torch.split(out, self.width, 1)
        outs = []
        for i in range(self.nums):
            sp = spx[i] if i == 0 or self.stype == "stage" else outs[-1] + spx[i]
            outs.append(self.relu(self.bns[i](self.convs[i](self.shifts[i](sp)))))
        out = torch.cat(outs, 1)
        last_sp = self.shifts[self.nums](spx[self.nums])
        if self.scale != 1 and self.stype == "normal":
            out = torch.cat((out, last_sp), 1)
        elif self.scale != 1 and self.stype == "stage":
            out = torch.cat((out, self.pool(last_sp)), 1)
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """torchvision ResNet-50 bottleneck (stride on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet ResNet skeleton shared by Res2Net, TEA and torchvision ResNet-50.

    Args:
      block: block class (`Bottle2neck`, `Bottle2neckShift` or `Bottleneck`).
      stage_sizes: blocks per stage.
      num_classes: classifier outputs.
      stem_width: channels of the 7x7 stem conv.
      planes: bottleneck planes of the four stages (outputs are 4x).
      **block_kwargs: passed to every block (e.g. `n_segment`).
    """

    def __init__(
        self,
        block: type[nn.Module],
        stage_sizes: Sequence[int] = FULL_STAGE_SIZES,
        num_classes: int = 1000,
        stem_width: int = 64,
        planes: Sequence[int] = FULL_PLANES,
        **block_kwargs,
    ):
        super().__init__()
        self.inplanes = stem_width
        self.conv1 = nn.Conv2d(3, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (size, plane) in enumerate(zip(stage_sizes, planes, strict=True)):
            stride = 1 if i == 0 else 2
            setattr(
                self, f"layer{i + 1}", self._make_layer(block, plane, size, stride, block_kwargs)
            )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes[-1] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes, blocks, stride, block_kwargs):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes,
                    planes * block.expansion,
                    kernel_size=1,
                    stride=stride,
                    bias=False,
                ),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = {"stype": "stage"} if block is not Bottleneck else {}
        normal = {"stype": "normal"} if block is not Bottleneck else {}
        layers = [block(self.inplanes, planes, stride, downsample, **stage, **block_kwargs)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **normal, **block_kwargs) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def res2net50(**kwargs) -> ResNet:
    """Res2Net-50 26w_4s ImageNet classifier."""
    return ResNet(Bottle2neck, **kwargs)


def tea50_backbone(num_segments: int = 8, **kwargs) -> ResNet:
    """TEA-Res2Net-50 backbone (every block a TEA block) with its own `fc`."""
    return ResNet(Bottle2neckShift, n_segment=num_segments, **kwargs)


def resnet50(**kwargs) -> ResNet:
    """torchvision ResNet-50."""
    return ResNet(Bottleneck, **kwargs)


class TSN(nn.Module):
    """TSN wrapper of the released training code: backbone `fc` replaced by dropout, `new_fc`.

    Takes videos (N, T, 3, H, W) and averages the per-frame logits over T.
    """

    def __init__(self, num_classes: int, num_segments: int, base_model: ResNet, dropout=0.5):
        super().__init__()
        self.num_segments = num_segments
        feature_dim = base_model.fc.in_features
        base_model.fc = nn.Dropout(p=dropout)
        self.base_model = base_model
        self.new_fc = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(self.new_fc.weight, 0, 0.001)
        nn.init.constant_(self.new_fc.bias, 0)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        base_out = self.new_fc(self.base_model(video.reshape((-1, *video.shape[-3:]))))
        return base_out.view((-1, self.num_segments, base_out.shape[-1])).mean(dim=1)


def tea50(num_classes: int, num_segments: int, dropout: float = 0.5, **kwargs) -> TSN:
    """The released TEA video model: TSN around the TEA backbone."""
    return TSN(num_classes, num_segments, tea50_backbone(num_segments, **kwargs), dropout)


def optim_policies(model: nn.Module, fc_lr5: bool = True) -> list[dict]:
    """The parameter groups of the released `TSN.get_optim_policies` (RGB, no partial BN)."""
    groups: dict[str, list] = {
        name: []
        for name in (
            "first_conv_weight",
            "first_conv_bias",
            "normal_weight",
            "normal_bias",
            "BN scale/shift",
            "lr5_weight",
            "lr10_bias",
        )
    }
    convs = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Conv1d):
            convs += 1
            prefix = "first_conv" if convs == 1 else "normal"
            groups[f"{prefix}_weight"].append(module.weight)
            if module.bias is not None:
                groups[f"{prefix}_bias"].append(module.bias)
        elif isinstance(module, nn.Linear):
            groups["lr5_weight" if fc_lr5 else "normal_weight"].append(module.weight)
            groups["lr10_bias" if fc_lr5 else "normal_bias"].append(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            groups["BN scale/shift"].extend(module.parameters())
    multipliers = {
        "first_conv_weight": (1, 1),
        "first_conv_bias": (2, 0),
        "normal_weight": (1, 1),
        "normal_bias": (2, 0),
        "BN scale/shift": (1, 0),
        "lr5_weight": (5, 1),
        "lr10_bias": (10, 0),
    }
    return [
        {
            "params": params,
            "lr_mult": multipliers[name][0],
            "decay_mult": multipliers[name][1],
            "name": name,
        }
        for name, params in groups.items()
    ]


def adjust_learning_rate(optimizer, epoch: int, lr: float, weight_decay: float, lr_steps):
    """The released `main.py`'s step schedule: it leaves NumPy float64 learning rates in the
    optimizer's groups."""
    decay = 0.1 ** (sum(epoch >= np.array(lr_steps)))
    for group in optimizer.param_groups:
        group["lr"] = lr * decay * group["lr_mult"]
        group["weight_decay"] = weight_decay * group["decay_mult"]


def save_checkpoint(path, model: nn.Module, optimizer, epoch: int, best_prec1: float) -> None:
    """`torch.save` of the dict the released `main.py`'s `save_checkpoint` writes."""
    state = {
        "epoch": epoch + 1,
        "arch": "tea50",
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "best_prec1": best_prec1,
    }
    torch.save(state, path)


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Draws every weight at random, temporal kernels included (identity plus noise).

    Random temporal kernels make a time reversal or a transposed kernel visible in parity tests.
    """
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            fan_out //= module.groups
            std = math.sqrt(2.0 / fan_out)
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
        elif isinstance(module, nn.Conv1d):
            identity = torch.tensor([0.0, 1.0, 0.0]).expand(module.weight.shape)
            noise = 0.4 * torch.randn(module.weight.shape, generator=gen)
            module.weight.copy_(identity + noise)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.copy_(torch.rand(module.weight.shape, generator=gen) + 0.5)
            module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        elif isinstance(module, nn.Linear):
            bound = 1.0 / math.sqrt(module.in_features)
            module.weight.copy_((torch.rand(module.weight.shape, generator=gen) * 2 - 1) * bound)
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model


@torch.no_grad()
def calibrate_batch_norm_(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Sets every BatchNorm's running statistics to those of a training-mode pass on `inputs`.

    Keeps eval-mode activations in the range the network saw in training. Leaves the model in
    eval mode with PyTorch's default momentum restored.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0
    model.train()
    model(inputs)
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()
