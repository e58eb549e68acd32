"""Config keys of CenterNet ("Objects as Points", Zhou et al. 2019), with the authors' defaults.

Sources: [XZ] xingyizhou/CenterNet at 4c50fd3a, ``src/lib/opts.py`` (heads, loss weights, K, flip/multi-scale
test), ``src/lib/datasets/dataset/coco.py`` (mean/std, PCA eigen-values/-vectors, 512x512 input)
and ``src/lib/datasets/sample/ctdet.py`` (augmentation).
"""
from __future__ import annotations

from common.config import CfgNode as CN
from common.data.transforms.centernet_aug import COCO_BGR_PIXEL_MEAN, COCO_BGR_PIXEL_STD, COCO_EIG_VAL, COCO_EIG_VEC
from common.modeling.backbone.dla import add_dla_config
from common.modeling.backbone.hourglass import add_hourglass_config
from common.modeling.backbone.resnet_deconv import add_resnet_deconv_config

__all__ = ["add_centernet_config"]


def add_centernet_config(cfg: CN) -> None:
    """Add ``MODEL.CENTERNET.*``, ``INPUT.CENTERNET.*`` and the backbone nodes
    (``MODEL.RESNET_DECONV``, ``MODEL.DLA``, ``MODEL.HOURGLASS``; only when missing) to ``cfg`` in place.

    Also sets the authors' pixel statistics (BGR, /255 then mean/std -> ``PIXEL_MEAN = 255 * mean``,
    ``PIXEL_STD = 255 * std``), ``SOLVER.OPTIMIZER = "ADAM"`` with zero weight decay (the
    authors' ``torch.optim.Adam(model.parameters(), lr)``) and the 512x512 test size; YAML files
    and CLI overrides are merged afterwards.
    """
    cfg.MODEL.CENTERNET = CN()
    c = cfg.MODEL.CENTERNET
    c.NUM_CLASSES = 80
    c.IN_FEATURES = ["up"]  # one per supervised stack; the last one is used at test time
    c.HEAD_CONV = 64  # 3x3 conv width of each head (256 for DLA / Hourglass); 0 = direct 1x1 conv
    c.PRIOR_BIAS = -2.19  # heatmap final-conv bias (prior ~0.1)
    # wh/reg initialisation of the authors' networks: "auto" (from the backbone), "resnet_dcn",
    # "msra_resnet", "pose_dla_dcn" or "large_hourglass" (see centernet/head.py).
    c.HEAD_INIT = "auto"
    c.DOWN_RATIO = 4  # output stride R; must equal the backbone feature's stride
    # Targets (common.assigners.gaussian).
    c.GAUSSIAN_RADIUS_VARIANT = "cornernet_bug"  # or "cornernet_fixed" (CornerNet's corrected formula)
    c.MIN_OVERLAP = 0.7
    # Loss weights (opts.py: hm_weight, wh_weight, off_weight) and focal exponents.
    c.HM_WEIGHT = 1.0
    c.WH_WEIGHT = 0.1
    c.OFF_WEIGHT = 1.0
    c.FOCAL_ALPHA = 2.0
    c.FOCAL_BETA = 4.0
    # Inference.
    c.TOPK = 100  # --K: detections per image, over all classes, no score threshold
    c.FLIP_TEST = False  # --flip_test: average hm/wh with the flipped image; offset from the original
    c.TEST_SCALES = [1.0]  # --test_scales; more than one scale -> concatenation + per-class soft-NMS
    # Soft-NMS of merge_outputs: soft_nms(Nt=0.5, method=2) of [XZ] external/nms.pyx.
    c.SOFT_NMS_METHOD = "gaussian"  # "gaussian" (method 2), "linear" (1) or "hard" (0)
    c.SOFT_NMS_SIGMA = 0.5
    c.SOFT_NMS_IOU_THRESH = 0.5  # Nt (linear / hard only)
    c.SOFT_NMS_SCORE_THRESH = 0.001
    c.SOFT_NMS_PLUS_ONE = True  # the Cython IoU's legacy (x2 - x1 + 1) widths; False = continuous IoU
    c.NMS = False  # --nms: soft-NMS also with a single scale
    c.TEST_PAD_CENTERED = True  # authors: pad to (H | 31) + 1 (hourglass: | 127) with the image centred
    # (h, w) > 0: the authors' fix_res test input (the image warped to this size, e.g. (512, 512));
    # (0, 0): keep_res (the image, cv2-resized per test scale, padded centred). The mapper does not
    # resize when it is set.
    c.TEST_INPUT_SIZE = (0, 0)
    # Clip boxes to the image and drop empty ones (detectron2). The authors do neither
    # (ctdet_post_process), so their COCO AP is computed on unclipped boxes.
    c.CLIP_BOXES = False

    cfg.INPUT.CENTERNET = CN()
    i = cfg.INPUT.CENTERNET
    i.TRAIN_SIZE = (512, 512)  # (h, w) of the fixed training input
    i.SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # np.arange(0.6, 1.4, 0.1)
    i.BORDER = 128  # random-centre border, halved until it fits
    i.RANDOM_CROP = True  # False: the authors' --not_rand_crop (shift 0.1 / scale 0.4 jitter)
    i.SHIFT = 0.1
    i.SCALE = 0.4
    i.COLOR_AUG = True
    # The authors train on every annotation of coco.getAnnIds(imgIds=[img_id]), crowd boxes
    # included, and on the first max_objs = 128 of them ([XZ] sample/ctdet.py, dataset/coco.py).
    i.KEEP_CROWD = True  # False: drop iscrowd annotations (detectron2's DatasetMapper)
    i.MAX_OBJECTS = 128  # 0: no cap
    i.COLOR_JITTER = 0.4  # brightness/contrast/saturation alpha = 1 + U(-0.4, 0.4)
    i.LIGHTING_STD = 0.1
    # COCO PCA of the pixel colours in BGR order, /255 units (_eig_val / _eig_vec of the authors).
    i.EIG_VAL = list(COCO_EIG_VAL)
    i.EIG_VEC = [list(v) for v in COCO_EIG_VEC]

    cfg.MODEL.PIXEL_MEAN = list(COCO_BGR_PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(COCO_BGR_PIXEL_STD)
    cfg.INPUT.FORMAT = "BGR"
    cfg.INPUT.MIN_SIZE_TEST = 512
    cfg.INPUT.MAX_SIZE_TEST = 512
    cfg.SOLVER.OPTIMIZER = "ADAM"  # authors' main.py: torch.optim.Adam(model.parameters(), lr)
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.BACKBONE_MULTIPLIER = 1.0

    add_resnet_deconv_config(cfg)
    add_dla_config(cfg)
    add_hourglass_config(cfg)
