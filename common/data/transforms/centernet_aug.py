"""The CornerNet / CenterNet training augmentation as fvcore transforms (boxes follow the image).

* :class:`AffineTransform`: a 2x3 similarity warp (``cv2.warpAffine``, bilinear, constant 0
  border) of image and coordinates; crop + resize + pad in one step, as in the authors'
  ``get_affine_transform`` / ``warpAffine`` ([XZ] ``src/lib/utils/image.py``).
* :class:`RandomCenterAffine`: the random scale-and-crop of CenterNet ([XZ]
  ``src/lib/datasets/sample/ctdet.py``): ``s = max(H, W) * choice(scales)``, centre uniform in
  ``[border, size - border)`` (border halved until it fits), warped to a fixed output size; or
  the ``--not_rand_crop`` Gaussian shift/scale jitter.
* :class:`ColorJitterLighting` / :class:`ColorJitterLightingTransform`: brightness, contrast and
  saturation with ``alpha = 1 + U(-v, v)`` in random order, then PCA lighting
  ``+ eigvec @ (eigval * N(0, std))`` ([XZ] ``color_aug``; CornerNet ``sample/utils.py``).
* :class:`CornerNetRandomCrop`: CornerNet's ``random_crop`` + ``_resize_image`` (princeton-vl/CornerNet
  ``sample/utils.py``, ``sample/coco.py``; also CornerNet-Lite and CenterNet-Triplets): a window of
  the *network input's* size times ``choice(scales)`` (not of the image's size, as CenterNet),
  centred on an integer point at least ``border`` inside the image, then resized to the input;
  or, without random crop, the centred square of side ``max(H, W)`` (``_full_image_crop``).
* :func:`centernet_test_affine`: the test-time input geometry of [XZ]
  ``src/lib/detectors/base_detector.py`` ``pre_process`` (``keep_res`` padding / ``fix_res`` warp).

Coordinates: the same matrix maps image pixels and box corners (the authors' convention).
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from fvcore.transforms.transform import Transform

from .augmentation import Augmentation

__all__ = [
    "COCO_EIG_VAL",
    "COCO_EIG_VEC",
    "COCO_BGR_PIXEL_MEAN",
    "COCO_BGR_PIXEL_STD",
    "flip_and_color_augmentations",
    "AffineTransform",
    "ColorJitterLighting",
    "ColorJitterLightingTransform",
    "CornerNetRandomCrop",
    "RandomCenterAffine",
    "center_scale_affine_matrix",
    "centernet_test_affine",
]


def center_scale_affine_matrix(center: Sequence[float], scale: float, output_size: Tuple[int, int]) -> np.ndarray:
    """``(2, 3)`` matrix mapping a square window of side ``scale`` (input pixels) centred at
    ``center = (cx, cy)`` onto an output of ``output_size = (h, w)``; both axes scale by
    ``w / scale`` (the authors' ``get_affine_transform`` with ``rot = 0``).

    Raises:
        ValueError: ``scale <= 0``.
    """
    if scale <= 0:
        raise ValueError(f"center_scale_affine_matrix: scale must be > 0, got {scale}")
    h, w = output_size
    k = float(w) / float(scale)
    return np.array([[k, 0.0, w / 2.0 - k * center[0]], [0.0, k, h / 2.0 - k * center[1]]], dtype=np.float64)


def centernet_test_affine(height: int, width: int, scale: float = 1.0, input_size: Optional[Tuple[int, int]] = None,
                          pad: int = 31) -> Tuple[Tuple[int, int], np.ndarray, Tuple[int, int]]:
    """The authors' test-time input of an ``height x width`` image at test scale ``scale``.

    The image is first resized to ``(int(height * scale), int(width * scale))`` (``cv2.resize``,
    bilinear, of the uint8 image), then warped by the returned matrix:

    * ``input_size is None`` (``--keep_res``, all their COCO tests): the input is
      ``((new_h | pad) + 1, (new_w | pad) + 1)`` and the image centre ``(new_w // 2, new_h // 2)``
      (integer division) lands on the input centre: a pure translation by
      ``(inp_w // 2 - new_w // 2, inp_h // 2 - new_h // 2)``; ``pad`` is 31, or 127 for Hourglass.
    * ``input_size = (H, W)`` (``fix_res``, 512x512): the window of side ``max(height, width)``
      (the *original* size) centred at ``(new_w / 2, new_h / 2)`` is mapped onto ``W`` pixels.

    Returns:
        ``(new_h, new_w)``, the ``(2, 3)`` float64 matrix (resized-image pixels -> input pixels,
        scale ``matrix[0, 0]`` on both axes), and ``(inp_h, inp_w)``.

    Raises:
        ValueError: ``scale <= 0`` or an empty resized image.

    Source: xingyizhou/CenterNet ``src/lib/detectors/base_detector.py`` ``pre_process`` and
    ``src/lib/utils/image.py`` ``get_affine_transform``.
    """
    new_h, new_w = int(height * scale), int(width * scale)
    if scale <= 0 or new_h <= 0 or new_w <= 0:
        raise ValueError(f"centernet_test_affine: scale {scale} gives an empty {new_h}x{new_w} image "
                         f"from {height}x{width} (MODEL.CENTERNET.TEST_SCALES)")
    if input_size is None:
        inp_h, inp_w = (new_h | pad) + 1, (new_w | pad) + 1
        matrix = np.array([[1.0, 0.0, inp_w // 2 - new_w // 2], [0.0, 1.0, inp_h // 2 - new_h // 2]])
    else:
        inp_h, inp_w = int(input_size[0]), int(input_size[1])
        matrix = center_scale_affine_matrix((new_w / 2.0, new_h / 2.0), float(max(height, width)), (inp_h, inp_w))
    return (new_h, new_w), matrix, (inp_h, inp_w)


class AffineTransform(Transform):
    """Warp by a ``(2, 3)`` affine ``matrix`` to an ``out_h x out_w`` image.

    ``apply_image``: ``(H, W[, C])`` uint8/float -> ``(out_h, out_w[, C])`` same dtype (bilinear,
    border 0); ``apply_coords``: ``(N, 2)`` (x, y) -> ``matrix @ [x, y, 1]``; ``apply_segmentation``:
    nearest neighbour.
    """

    def __init__(self, matrix: np.ndarray, out_h: int, out_w: int, border_value: float = 0.0):
        super().__init__()
        matrix = np.asarray(matrix, dtype=np.float64)
        if matrix.shape != (2, 3):
            raise ValueError(f"AffineTransform: matrix must be (2, 3), got {matrix.shape}")
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray, interp: Optional[int] = None) -> np.ndarray:
        flags = cv2.INTER_LINEAR if interp is None else interp
        out = cv2.warpAffine(img, self.matrix, (int(self.out_w), int(self.out_h)), flags=flags,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=self.border_value)
        if img.ndim == 3 and out.ndim == 2:  # cv2 drops a single channel axis
            out = out[:, :, None]
        return out

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords = np.asarray(coords, dtype=np.float64)
        return coords @ self.matrix[:, :2].T + self.matrix[:, 2]

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation, interp=cv2.INTER_NEAREST)


def _get_border(border: int, size: int) -> int:
    """Largest ``border // 2^k`` with ``size - b > b`` (the authors' ``_get_border``)."""
    i = 1
    while size - border // i <= border // i:
        i *= 2
    return border // i


# COCO statistics of the keypoint detectors' code (xingyizhou/CenterNet
# ``src/lib/datasets/dataset/coco.py``; princeton-vl/CornerNet ``db/coco.py``): the PCA of the
# pixel colours in BGR order, /255 units, for the lighting noise, and the BGR mean/std in 0-255.
COCO_EIG_VAL = [0.2141788, 0.01817699, 0.00341571]
COCO_EIG_VEC = [
    [-0.58752847, -0.69563484, 0.41340352],
    [-0.5832747, 0.00994535, -0.81221408],
    [-0.56089297, 0.71832671, 0.41158938],
]
COCO_BGR_PIXEL_MEAN = [104.01362, 114.03422, 119.91659]  # 255 * [0.40789654, 0.44719302, 0.47026115]
COCO_BGR_PIXEL_STD = [73.60276, 69.89082, 70.91508]  # 255 * [0.28863828, 0.27408164, 0.27809835]


class RandomCenterAffine(Augmentation):
    """CenterNet's random scale + crop to a fixed ``output_size = (h, w)``.

    Args:
        output_size: (h, w) of the network input (512x512 for COCO).
        scales: scale factors of ``max(H, W)`` to choose from (``np.arange(0.6, 1.4, 0.1)``).
        border: minimum distance of the random centre to the image border (128), halved until it fits.
        random_crop: False selects the ``--not_rand_crop`` jitter: centre shifted by
            ``s * clip(N(0, shift), -2 shift, 2 shift)``, ``s *= clip(N(1, scale), 1 - scale, 1 + scale)``.
    """

    def __init__(self, output_size: Tuple[int, int] = (512, 512),
                 scales: Sequence[float] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3), border: int = 128,
                 random_crop: bool = True, shift: float = 0.1, scale: float = 0.4):
        super().__init__()
        if len(output_size) != 2 or min(output_size) <= 0:
            raise ValueError(f"RandomCenterAffine: output_size must be (h, w) > 0, got {output_size} "
                             "(INPUT.CENTERNET.TRAIN_SIZE)")
        if len(scales) == 0 or min(scales) <= 0:
            raise ValueError(f"RandomCenterAffine: scales must be positive, got {scales} (INPUT.CENTERNET.SCALES)")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> AffineTransform:
        h, w = image.shape[:2]
        s = float(max(h, w))
        c = np.array([w / 2.0, h / 2.0])
        if self.random_crop:
            s = s * float(np.random.choice(self.scales))
            wb, hb = _get_border(self.border, w), _get_border(self.border, h)
            c = np.array([np.random.randint(low=wb, high=max(w - wb, wb + 1)),
                          np.random.randint(low=hb, high=max(h - hb, hb + 1))], dtype=np.float64)
        else:
            c = c + s * np.clip(np.random.randn(2) * self.shift, -2 * self.shift, 2 * self.shift)
            s = s * float(np.clip(np.random.randn() * self.scale + 1, 1 - self.scale, 1 + self.scale))
        out_h, out_w = self.output_size
        return AffineTransform(center_scale_affine_matrix(c, s, (out_h, out_w)), out_h, out_w)


class CornerNetRandomCrop(Augmentation):
    """CornerNet's random crop (see the module docstring) as one :class:`AffineTransform`.

    With ``scale`` drawn from ``scales``, the window is ``(int(out_h * scale), int(out_w * scale))``
    input pixels centred on ``(ctx, cty)``, ``ctx ~ randint(wb, W - wb)`` (``wb`` = ``border``
    halved until it fits), black outside the image; it is resized to ``output_size``. Pixel and
    box ``x`` map to ``(x - ctx + win_w // 2) * out_w / win_w`` (the authors' crop offsets then
    their resize ratio), ``y`` likewise. ``random_crop=False``: window ``max(H, W)`` square centred
    on ``(W // 2, H // 2)``.

    Args:
        output_size: ``(h, w)`` of the network input (511x511 in the authors' configs).
        scales: window scales (``np.arange(0.6, 1.4, 0.1)``; CenterNet-Triplets the same).
        border: 128 in the authors' COCO configs.
        random_crop: the authors' ``rand_crop``.

    Raises:
        ValueError: empty output size or non-positive scales.
    """

    def __init__(self, output_size: Tuple[int, int] = (511, 511),
                 scales: Sequence[float] = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3), border: int = 128,
                 random_crop: bool = True):
        super().__init__()
        if len(output_size) != 2 or min(output_size) <= 0:
            raise ValueError(f"CornerNetRandomCrop: output_size must be (h, w) > 0, got {output_size} "
                             "(INPUT.CORNERNET.TRAIN_SIZE)")
        if len(scales) == 0 or min(scales) <= 0:
            raise ValueError(f"CornerNetRandomCrop: scales must be positive, got {scales} (INPUT.CORNERNET.SCALES)")
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> AffineTransform:
        h, w = image.shape[:2]
        out_h, out_w = int(self.output_size[0]), int(self.output_size[1])
        if self.random_crop:
            scale = float(np.random.choice(self.scales))
            win_h, win_w = max(int(out_h * scale), 1), max(int(out_w * scale), 1)
            wb, hb = _get_border(self.border, w), _get_border(self.border, h)
            ctx = int(np.random.randint(low=wb, high=max(w - wb, wb + 1)))
            cty = int(np.random.randint(low=hb, high=max(h - hb, hb + 1)))
        else:
            win_h = win_w = max(h, w)
            ctx, cty = w // 2, h // 2
        kx, ky = out_w / float(win_w), out_h / float(win_h)
        matrix = np.array([[kx, 0.0, kx * (win_w // 2 - ctx)], [0.0, ky, ky * (win_h // 2 - cty)]], dtype=np.float64)
        return AffineTransform(matrix, out_h, out_w)


class ColorJitterLightingTransform(Transform):
    """Deterministic colour jitter + PCA lighting (parameters fixed; see :class:`ColorJitterLighting`).

    ``apply_image``: ``(H, W, 3)`` uint8 or float in 0-255 -> float32, not clipped (as the authors).
    The grey image used by contrast/saturation is computed once from the input. Coordinates are unchanged.

    Args:
        order: permutation of (0 brightness, 1 contrast, 2 saturation).
        alphas: (3,) factors of the three operations.
        lighting: (3,) additive offset in 0-255 units, in the image's channel order.
        image_format: "BGR" or "RGB" (which channel is blue, for the grey image).
    """

    def __init__(self, order: Sequence[int], alphas: Sequence[float], lighting: np.ndarray, image_format: str = "BGR"):
        super().__init__()
        if image_format not in ("BGR", "RGB"):
            raise ValueError(f"ColorJitterLightingTransform: image_format must be BGR or RGB, got {image_format!r}")
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"ColorJitterLightingTransform expects (H, W, 3) images, got {img.shape}")
        img = img.astype(np.float32)
        wts = np.array([0.114, 0.587, 0.299] if self.image_format == "BGR" else [0.299, 0.587, 0.114], np.float32)
        gs = img @ wts  # (H, W)
        gs_mean = float(gs.mean())
        for op in self.order:
            a = float(self.alphas[op])
            if op == 0:
                img = img * a
            elif op == 1:
                img = img * a + gs_mean * (1 - a)
            else:
                img = img * a + gs[:, :, None] * (1 - a)
        return img + np.asarray(self.lighting, np.float32).reshape(1, 1, 3)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class ColorJitterLighting(Augmentation):
    """Random brightness/contrast/saturation (``alpha = 1 + U(-jitter, jitter)``, random order) and
    PCA lighting (``eigvec @ (eigval * N(0, lighting_std))`` x 255).

    Args:
        eig_val: (3,) PCA eigen-values of the dataset's colours (/255 units, BGR order).
        eig_vec: (3, 3) eigen-vectors (rows = BGR channels), as the authors' ``_eig_vec``.
        jitter: 0.4 in the authors' code. lighting_std: 0.1.
        image_format: channel order of the images the mapper reads ("BGR" or "RGB").
    """

    def __init__(self, eig_val: Sequence[float], eig_vec: Sequence[Sequence[float]], jitter: float = 0.4,
                 lighting_std: float = 0.1, image_format: str = "BGR"):
        super().__init__()
        eig_val = np.asarray(eig_val, np.float64).reshape(3)
        eig_vec = np.asarray(eig_vec, np.float64).reshape(3, 3)
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> ColorJitterLightingTransform:
        order = np.random.permutation(3).tolist()
        alphas = (1.0 + np.random.uniform(-self.jitter, self.jitter, size=3)).tolist()
        alpha = np.random.normal(scale=self.lighting_std, size=3)
        lighting = (self.eig_vec @ (self.eig_val * alpha)) * 255.0  # BGR order
        if self.image_format == "RGB":
            lighting = lighting[::-1].copy()
        return ColorJitterLightingTransform(order, alphas, lighting, self.image_format)


def flip_and_color_augmentations(cfg, node) -> List["Augmentation"]:
    """The flip (``INPUT.RANDOM_FLIP``) and colour jitter + PCA lighting (``node.COLOR_AUG``,
    ``EIG_VAL``, ``EIG_VEC``, ``COLOR_JITTER``, ``LIGHTING_STD``) that follow the crop in CenterNet's
    and CornerNet's training augmentation (xingyizhou/CenterNet ``ctdet.py``; princeton-vl/CornerNet
    ``sample/coco.py``).

    Raises:
        ValueError: ``INPUT.RANDOM_FLIP`` not in none / horizontal / vertical.
    """
    from .augmentation_impl import RandomFlip

    augs: List[Any] = []
    flip = cfg.INPUT.RANDOM_FLIP
    if flip not in ("none", "horizontal", "vertical"):
        raise ValueError(f"INPUT.RANDOM_FLIP must be 'none', 'horizontal' or 'vertical', got {flip!r}")
    if flip != "none":
        augs.append(RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    if node.COLOR_AUG:
        augs.append(ColorJitterLighting(node.EIG_VAL, node.EIG_VEC, float(node.COLOR_JITTER),
                                        float(node.LIGHTING_STD), cfg.INPUT.FORMAT))
    return augs
