#!/usr/bin/env python
"""Plot AutoAssign's learned category-wise centre priors (the paper's figure of learned priors,
Zhu et al., arXiv 2007.03496, Sec. 3.2 "Center Weighting" and the visualisation of the priors).

Reads a checkpoint (ours, or the authors' cvpods ``{'model': ...}``), takes the learnable ``mu`` and
``sigma`` ``(K, 2)`` (``(x, y)``, stride units) and writes one PNG with a panel per class: the
Gaussian ``G(dx, dy) = exp(-(dx - mu_x)^2 / (2 sigma_x^2)) exp(-(dy - mu_y)^2 / (2 sigma_y^2))``
over offsets from the box centre in strides, the stride grid (FPN locations, one per integer
offset), the mean ``mu`` and the 1-sigma ellipse.

    python tools/plot_center_prior.py output/autoassign_bccd/model_final.pth --output prior.png
    python tools/plot_center_prior.py AutoAssign_Res50_FPN_1x.pth --output coco_priors.png --radius 2.5

Class names come from ``--class-names``, else from the checkpoint's ``metadata.thing_classes``
(written by our trainer), else ``class i``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["load_center_prior", "plot_center_prior", "main"]


def load_center_prior(path: str) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """``(mu (K, 2), sigma (K, 2), class names)`` from a checkpoint file.

    Accepts ``{'model': state_dict, ...}`` (detectron2 / cvpods / ours) or a bare state dict; keys
    ``mu`` / ``sigma`` (optionally behind a ``module.`` prefix).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a state dict with ``mu`` and ``sigma`` of the same ``(K, 2)`` shape.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"plot_center_prior: checkpoint {path} does not exist")
    ckpt: Any = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(f"plot_center_prior: {path} holds no state dict")
    found = {}
    for name in ("mu", "sigma"):
        for key in (name, "module." + name):
            if key in state:
                found[name] = state[key]
                break
        else:
            raise ValueError(f"plot_center_prior: {path} has no '{name}' tensor (not an AutoAssign checkpoint)")
    mu, sigma = (found[k].detach().float().cpu().numpy() for k in ("mu", "sigma"))
    if mu.ndim != 2 or mu.shape[1] != 2 or mu.shape != sigma.shape:
        raise ValueError(f"plot_center_prior: {path}: mu {mu.shape} and sigma {sigma.shape} must both be (K, 2)")
    names: List[str] = []
    meta = ckpt.get("metadata") if isinstance(ckpt, Mapping) else None
    if isinstance(meta, Mapping) and len(meta.get("thing_classes", ())) == mu.shape[0]:
        names = [str(n) for n in meta["thing_classes"]]
    return mu, sigma, names


def plot_center_prior(mu: np.ndarray, sigma: np.ndarray, output: str, class_names: Optional[Sequence[str]] = None,
                      radius: float = 3.0, resolution: int = 121, title: str = "") -> Path:
    """Write the PNG (one panel per class, at most 10 columns) and return its path.

    Args:
        mu, sigma: ``(K, 2)`` ``(x, y)`` in stride units (``|sigma|`` is used, as the code squares it).
        output: PNG path (parent folders are created).
        class_names: K names (default ``class i``).
        radius: half-width of each panel, in strides.
        resolution: pixels per panel side of the evaluated Gaussian.

    Raises:
        ValueError: ``class_names`` of the wrong length, or a non-positive radius.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Ellipse

    k = mu.shape[0]
    names = list(class_names) if class_names else [f"class {i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"plot_center_prior: {len(names)} class names for {k} classes")
    if radius <= 0:
        raise ValueError(f"plot_center_prior: radius must be > 0, got {radius}")
    sig = np.abs(sigma)
    axis = np.linspace(-radius, radius, resolution)
    # (K, res) per axis; G = gx^T gy as an outer product per class (rows: y, columns: x).
    gx = np.exp(-((axis[None, :] - mu[:, :1]) ** 2) / (2 * np.maximum(sig[:, :1], 1e-12) ** 2))
    gy = np.exp(-((axis[None, :] - mu[:, 1:]) ** 2) / (2 * np.maximum(sig[:, 1:], 1e-12) ** 2))
    maps = gy[:, :, None] * gx[:, None, :]

    cols = min(k, 10)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    grid = np.arange(-math.floor(radius), math.floor(radius) + 1)
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        ax.imshow(maps[i], extent=(-radius, radius, radius, -radius), vmin=0.0, vmax=1.0, cmap="viridis")
        gxx, gyy = np.meshgrid(grid, grid)
        ax.scatter(gxx.ravel(), gyy.ravel(), s=3, c="white", alpha=0.6, linewidths=0)  # the stride grid
        ax.add_patch(Ellipse((mu[i, 0], mu[i, 1]), 2 * sig[i, 0], 2 * sig[i, 1], fill=False, color="red", lw=1))
        ax.plot([mu[i, 0]], [mu[i, 1]], "r+", ms=6)
        ax.set_title(f"{names[i]}\nmu=({mu[i, 0]:.2f},{mu[i, 1]:.2f}) sigma=({sig[i, 0]:.2f},{sig[i, 1]:.2f})", fontsize=6)
        ax.set_xticks(grid)
        ax.set_yticks(grid)
        ax.tick_params(labelsize=5)
    fig.suptitle(title or "AutoAssign learned centre priors (offset from the box centre, in strides; y down)", fontsize=8)
    fig.tight_layout()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="AutoAssign checkpoint (.pth) with 'mu' and 'sigma'")
    parser.add_argument("--output", default="center_prior.png", help="PNG to write")
    parser.add_argument("--class-names", nargs="+", default=None, help="one name per class")
    parser.add_argument("--radius", type=float, default=3.0, help="panel half-width in strides")
    args = parser.parse_args(argv)
    mu, sigma, names = load_center_prior(args.checkpoint)
    out = plot_center_prior(mu, sigma, args.output, args.class_names or names or None, radius=args.radius,
                            title=f"AutoAssign centre priors of {Path(args.checkpoint).name} (strides; y down)")
    print(f"wrote {out} ({mu.shape[0]} classes)")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
