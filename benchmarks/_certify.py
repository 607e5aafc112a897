# SPDX-License-Identifier: MIT
"""Certified Lipschitz bounds computed the same way for every library (onelip, deel-torchlip,
orthogonium): each layer of a (nested) ``nn.Sequential`` is bounded by this module from the
operator it applies in eval mode, checked against the layer's own output, and the product is
the whole body's certified bound. Shared by ``benchmarks/fashion_mnist.py`` and
``benchmarks/cifar10.py``."""

from __future__ import annotations

import math

SAFETY = 1e-6  # per-layer relative margin on the certified bounds (float32 evaluation)
CLAIM_TOL = 1e-5  # a library's claimed bound counts as valid within this relative rounding

def _leaves(module):
    from torch import nn

    if isinstance(module, nn.Sequential):
        for m in module:
            yield from _leaves(m)
    else:
        yield module


def _conv_operator(m, h=None):
    """(weight, stride, padding, padding_mode) of the convolution ``m`` applies in eval mode
    (on inputs like ``h``), or ``None`` if ``m`` is not one convolution."""
    from torch import nn

    from onelip import nn as onn
    from onelip.nn._base import ConstrainedLayer

    if isinstance(m, onn.SpectralConv2d):
        if h is None:
            raise TypeError("SpectralConv2d: its weight depends on the input size")
        return (m.eval_weight((h.shape[-2], h.shape[-1])), m.stride[0], m.padding[0],
                "zeros")
    if isinstance(m, onn.ConvLayer) and type(m).apply_weight is onn.ConvLayer.apply_weight \
            and type(m).eval_forward is ConstrainedLayer.eval_forward:
        # a family whose eval-mode function is one convolution with its cached kernel
        # (OrthoConv2d, AOLConv2d, ...): bounded here from that kernel, not from its claim
        return m.eval_weight(), m.stride[0], m.padding[0], m.padding_mode
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or tuple(m.dilation) != (1, 1):
            raise TypeError(f"{type(m).__name__}: groups/dilation not supported")
        k = m.kernel_size[0]
        pad = m.padding
        if isinstance(pad, str):
            if pad == "same" and m.stride[0] == 1 and k % 2 == 1:
                p = (k - 1) // 2
            elif pad == "valid":
                p = 0
            else:
                raise TypeError(f"{type(m).__name__}: padding {pad!r} not supported")
        else:
            if pad[0] != pad[1]:
                raise TypeError("asymmetric padding not supported")
            p = pad[0]
        if m.kernel_size[0] != m.kernel_size[1] or m.stride[0] != m.stride[1]:
            raise TypeError("non-square kernels or strides not supported")
        return m.weight, m.stride[0], p, m.padding_mode
    return None


def _conv_apply(x, w, b, stride, p, mode):
    import torch.nn.functional as TF

    if mode == "circular":
        x = TF.pad(x, (p, p, p, p), mode="circular")
        return TF.conv2d(x, w, b, stride=stride)
    if mode != "zeros":
        raise TypeError(f"padding_mode {mode!r} not supported")
    return TF.conv2d(x, w, b, stride=stride, padding=p)


def _conv_bound(w, size, stride, p, mode) -> float:
    """Certified bound of the conv's operator norm on (H, W) inputs."""
    import torch

    from onelip import functional as F

    if mode == "zeros":
        return float(F.conv2d_operator_norm_bound(w, size, stride=stride, padding=p))
    k = w.shape[-1]
    if mode == "circular" and stride == 1 and p == (k - 1) // 2 and k <= min(size):
        # circular "same" convolution on H×W: exactly the norm of its symbol on the H×W grid
        sym = F.conv2d_symbol(w.detach().double(), tuple(size), stride=1)
        return float(torch.linalg.matrix_norm(sym, ord=2).amax())
    raise TypeError(f"no bound for a {mode} convolution with stride {stride}, padding {p}")


def _linear_weight(m):
    from torch import nn

    if hasattr(m, "effective_weight") and hasattr(m, "in_features"):
        return m.effective_weight()
    if isinstance(m, nn.Linear):
        return m.weight
    return None


_ONE_LIPSCHITZ = {  # parameter-free 1-Lipschitz maps, by class name (any library)
    "GroupSort2", "GroupSort", "MaxMin", "FullSort", "Flatten", "Unflatten", "ToImage",
    "Identity", "InvertibleDownsample", "PixelUnshuffle",
}


def certified_body_bound(body, sample) -> tuple[float, list[dict]]:
    """Product of certified per-layer bounds of ``body`` (a flat or nested Sequential) at the
    input size of ``sample``, each layer's operator checked against its own output."""
    import torch
    import torch.nn.functional as TF

    from onelip import nn as onn
    from onelip.nn.channels import FirstChannels, ZeroChannelPad
    from onelip.nn.normalize import Normalize

    rows, lip = [], 1.0
    h = sample
    with torch.no_grad():
        for m in _leaves(body):
            out = m(h)
            cls = type(m).__name__
            conv = _conv_operator(m, h)
            lin = _linear_weight(m) if conv is None else None
            if conv is not None:
                w, s, p, mode = conv
                b = getattr(m, "bias", None)
                ref = _conv_apply(h, w, b, s, p, mode)
                bound = _conv_bound(w, tuple(h.shape[-2:]), s, p, mode)
                kind = f"conv {mode} pad {p} stride {s} on {tuple(h.shape[-2:])}"
            elif lin is not None:
                b = getattr(m, "bias", None)
                ref = h @ lin.mT + (b if b is not None else 0)
                bound = float(torch.linalg.matrix_norm(lin.detach().double(), ord=2))
                kind = "dense (exact spectral norm)"
            elif isinstance(m, (onn.L2NormPool2d,)) or cls in ("LPPool2d", "ScaledL2NormPool2d"):
                ks = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
                st = m.stride if m.stride is not None else ks
                st = st if isinstance(st, tuple) else (st,) * 2
                if tuple(ks) != tuple(st):
                    raise TypeError(f"{cls}: overlapping windows")
                if cls == "LPPool2d" and float(m.norm_type) != 2.0:
                    raise TypeError("LPPool2d: norm_type must be 2")
                coef = float(getattr(m, "_coefficient_lip", 1.0))
                ref, bound, kind = out, coef, "L2-norm pooling, non-overlapping"
            elif isinstance(m, Normalize):
                # (x − μ)/σ per channel: a diagonal map, exact norm max_c 1/σ_c (of the
                # float32 factors it applies)
                inv = m._inv_std.double()
                view = (1, -1) + (1,) * (h.dim() - 2)
                ref = ((h.double() - m._mean.double().view(view)) * inv.view(view)).to(out)
                bound, kind = float(inv.max()), "per-channel standardisation (exact: 1/min σ)"
            elif isinstance(m, ZeroChannelPad):
                pad = [0, 0] * (h.dim() - 2) + [0, m.channels - h.shape[1]]
                ref, bound, kind = TF.pad(h, pad), 1.0, "zero-channel padding (isometry)"
            elif isinstance(m, FirstChannels):
                ref, bound, kind = h[:, :m.channels], 1.0, "first channels (projection)"
            elif cls in _ONE_LIPSCHITZ:
                ref, bound, kind = out, 1.0, "1-Lipschitz (permutation / reshape)"
            elif isinstance(m, onn.LipschitzModule) and any(True for _ in m.parameters()):
                # a onelip family that is not one convolution (CPL, SOC, BRO, SLL, shift):
                # its own certified bound, which tests/test_layer_table.py attacks
                ref, bound = out, float(m.lipschitz_bound())
                kind = "onelip lipschitz_bound() (not one convolution; attacked by the suite)"
            else:
                raise TypeError(f"No certified bound for layer {cls}")
            err = float((ref - out).abs().max() / out.abs().max().clamp_min(1e-12))
            if err > 1e-4:
                raise RuntimeError(f"{cls}: re-implemented operator differs from the layer "
                                   f"({err:.2e}); its bound would not be certified")
            raw = bound
            bound *= 1 + SAFETY  # float32 evaluation of the layer
            rows.append({"layer": cls, "kind": kind, "bound": bound, "bound_exact": raw})
            lip *= bound
            h = out
    return lip, rows

def exact_body_bound(rows: list[dict]) -> float:
    """Product of the per-layer certified bounds without the float32 safety margin."""
    return math.prod(r.get("bound_exact", r["bound"] / (1 + SAFETY)) for r in rows)


def claim_is_valid(assumed: float, needed: float) -> bool:
    """A library's claimed bound is valid if it is at least the certified one (to rounding)."""
    return bool(assumed * (1 + CLAIM_TOL) >= needed)


def split_head(model):
    """(body, W, b) with model(x) = body(x) @ Wᵀ + b, in eval mode."""
    from torch import nn

    layers = list(_leaves(model))
    last = layers[-1]
    w = _linear_weight(last)
    if w is None:
        raise TypeError(f"the model does not end in a linear layer ({type(last).__name__})")
    return nn.Sequential(*layers[:-1]), w.detach(), (last.bias.detach()
                                                     if last.bias is not None else None)

