"""PyInstaller runtime hook: let ``import torchvision`` work when its C++ ops were left out.

A CPU bundle should carry torchvision's CPU build (download.pytorch.org/whl/cpu), whose C++
ops load. Where only the PyPI torchvision (its ops built against CUDA torch) was available,
build.spec leaves those ops out; torchvision 0.28/0.29 then fails at import because it
registers fake kernels for ``torchvision::nms`` / ``qnms`` unconditionally. EffiCell never
calls torchvision ops (timm imports torchvision only for transforms and FrozenBatchNorm2d),
so declaring the two op schemas on first import of torchvision is enough. When the ops are
in the bundle this hook does nothing.
"""

import importlib.abc
import os
import sys


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201, ARG002
        if name != "torchvision":
            return None
        sys.meta_path.remove(self)
        base = os.path.join(getattr(sys, "_MEIPASS", ""), "torchvision")
        has_ops = os.path.isdir(base) and any(f.startswith("_C.") for f in os.listdir(base))
        if not has_ops:
            import torch

            for op in ("nms", "qnms"):
                torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        return None  # the normal finders import torchvision itself


sys.meta_path.insert(0, _DeclareTorchvisionOps())
