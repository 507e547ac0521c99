"""BatchNorm folding: every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` goes into that conv.

The result computes the same function with one op less per conv, so it serves fast eager inference
(``detector = fuse_bn(detector)``) as well as export. Each pair is folded by
``torch.nn.utils.fusion.fuse_conv_bn_eval``; this module only finds the pairs and checks the result.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

CONV_TYPES = (nn.Conv2d,)
BN_TYPES = (nn.BatchNorm2d,)


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` with BN's running statistics (inference semantics)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fold {bn}: it tracks no running statistics")
    if conv.out_channels != bn.num_features:
        raise ValueError(f"cannot fold {bn} into {conv}: {conv.out_channels} != {bn.num_features} channels")
    return fuse_conv_bn_eval(conv.eval(), bn.eval())


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _sequential_pairs(model: nn.Module) -> List[Tuple[str, str]]:
    """(conv, bn) names adjacent in an ``nn.Sequential``: the common case, found without running the model."""
    pairs = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Sequential):
            kids = list(mod.named_children())
            for (n1, m1), (n2, m2) in zip(kids, kids[1:]):
                if isinstance(m1, CONV_TYPES) and isinstance(m2, BN_TYPES):
                    pre = f"{name}." if name else ""
                    pairs.append((pre + n1, pre + n2))
    return pairs


def _traced_pairs(model: nn.Module, run: Any) -> List[Tuple[str, str]]:
    """(conv, bn) names where, in an actual forward, BN's input is exactly that conv's output tensor.

    Finds convs and BNs held as separate attributes (``self.conv`` / ``self.bn``). A conv output that is
    also used elsewhere would make folding wrong; :func:`fuse_bn` catches that by checking outputs.
    """
    produced: Dict[int, str] = {}
    calls: Dict[str, int] = {}
    pairs: List[Tuple[str, str]] = []
    handles = []
    keep_alive: List[Tensor] = []
    names = {m: n for n, m in model.named_modules()}

    def conv_hook(mod: nn.Module, inp: Any, out: Tensor) -> None:
        keep_alive.append(out)  # ids are only unique while the tensors live
        produced[id(out)] = names[mod]
        calls[names[mod]] = calls.get(names[mod], 0) + 1

    def bn_hook(mod: nn.Module, inp: Any) -> None:
        calls[names[mod]] = calls.get(names[mod], 0) + 1
        src = produced.get(id(inp[0]))
        if src is not None:
            pairs.append((src, names[mod]))

    for m in model.modules():
        if isinstance(m, CONV_TYPES):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, BN_TYPES):
            handles.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in handles:
            h.remove()
    # a module called more than once (shared weights) cannot be folded safely
    return [(c, b) for c, b in pairs if calls.get(c) == 1 and calls.get(b) == 1]


def _default_run(model: nn.Module, example_input: Optional[Tensor]) -> Any:
    if example_input is None:
        size = getattr(model, "input_size", None) or (128, 128)
        size = (size, size) if isinstance(size, int) else tuple(size)
        p = next(model.parameters(), None)
        example_input = torch.randn(1, 3, *size, device=p.device if p is not None else "cpu")
    return lambda m: (getattr(m, "raw", None) or m)(example_input)


def _outputs(model: nn.Module, run: Any) -> List[Tensor]:
    with torch.no_grad():
        out = run(model)
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for v in out.values() if isinstance(v, Tensor)]
    return [o for o in out if isinstance(o, Tensor)] if isinstance(out, (list, tuple)) else []


def _find_pairs(model: nn.Module, run: Any) -> List[Tuple[str, str]]:
    """Structural pairs first, then the traced ones that add a conv and a BN not seen yet."""
    pairs = _sequential_pairs(model)
    seen_bn = {b for _, b in pairs}
    seen_conv = {c for c, _ in pairs}
    for c, b in _traced_pairs(model, run):
        if b not in seen_bn and c not in seen_conv:
            pairs.append((c, b))
            seen_bn.add(b)
            seen_conv.add(c)
    return pairs


def conv_bn_pairs(model: nn.Module, example_input: Optional[Tensor] = None) -> List[Tuple[str, str]]:
    """``(conv, bn)`` module names of every BatchNorm that directly follows a conv, as :func:`fuse_bn` folds them
    (one eval-mode forward on ``example_input``, default a random image of ``model.input_size``; the mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        return _find_pairs(model, _default_run(model, example_input))
    finally:
        model.train(was_training)


def fuse_bn(model: nn.Module, example_input: Optional[Tensor] = None, inplace: bool = False,
            verify: bool = True) -> nn.Module:
    """Fold every ``BatchNorm2d`` that directly follows a ``Conv2d`` into it; returns an eval-mode model.

    Pairs are found structurally (adjacent in an ``nn.Sequential``) and by running one forward
    (``model.raw(x)`` when the model has it, else ``model(x)``; ``example_input`` defaults to zeros of
    ``model.input_size``). Folded BNs become ``nn.Identity`` so module names and attributes stay.
    ``verify`` folds a copy whose BNs get random statistics first and compares outputs, because with the
    default statistics of an untrained model a wrong pairing would go unnoticed.
    Use only for inference: the folded model has no BN to train.
    """
    target = model if inplace else copy.deepcopy(model)
    target.eval()
    run = _default_run(target, example_input)
    pairs = _find_pairs(target, run)
    if not pairs:
        return target
    if verify:
        _verify_pairs(target, pairs, run)
    for c, b in pairs:
        conv, bn = target.get_submodule(c), target.get_submodule(b)
        _set_submodule(target, c, fold_conv_bn(conv, bn))
        _set_submodule(target, b, nn.Identity())
    return target


def _verify_pairs(model: nn.Module, pairs: Sequence[Tuple[str, str]], run: Any) -> None:
    probe = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(0)
    for _, b in pairs:
        bn = probe.get_submodule(b)
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        if bn.weight is not None:
            bn.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            bn.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    ref = _outputs(probe, run)
    for c, b in pairs:
        _set_submodule(probe, c, fold_conv_bn(probe.get_submodule(c), probe.get_submodule(b)))
        _set_submodule(probe, b, nn.Identity())
    got = _outputs(probe, run)
    for r, o in zip(ref, got):
        scale = float(r.abs().max()) + 1e-6
        if not torch.allclose(r, o, rtol=1e-3, atol=1e-4 * scale):
            raise RuntimeError(
                "fuse_bn: folding changed the model output (max abs diff "
                f"{float((r - o).abs().max()):.3g}); a conv output is probably used by more than its BatchNorm. "
                f"Pairs found: {list(pairs)}")


def count_batchnorm(model: nn.Module) -> int:
    """BatchNorm layers left in ``model`` (0 after a complete :func:`fuse_bn`)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


__all__ = ["conv_bn_pairs", "count_batchnorm", "fold_conv_bn", "fuse_bn"]
