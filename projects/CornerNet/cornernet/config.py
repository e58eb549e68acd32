"""Config keys of CornerNet (Law & Deng 2018), CornerNet-Squeeze (Law et al. 2019) and CenterNet:
Keypoint Triplets (Duan et al. 2019), with the authors' defaults.

Sources: princeton-vl/CornerNet ``config/CornerNet.json``, ``db/detection.py`` (test defaults),
``db/coco.py`` (mean/std, PCA); princeton-vl/CornerNet-Lite ``configs/CornerNet_Squeeze.json``;
Duankaiwen/CenterNet ``config/CenterNet-{52,104}.json``, ``db/detection.py``.
"""
from __future__ import annotations

from common.config import CfgNode as CN
from common.data.transforms.centernet_aug import COCO_BGR_PIXEL_MEAN, COCO_BGR_PIXEL_STD, COCO_EIG_VAL, COCO_EIG_VEC
from common.modeling.backbone.hourglass import add_hourglass_config

__all__ = ["add_cornernet_config"]


def add_cornernet_config(cfg: CN) -> None:
    """Add ``MODEL.CORNERNET.*``, ``INPUT.CORNERNET.*`` and ``MODEL.HOURGLASS`` (when missing) to
    ``cfg`` in place; set the authors' pixel statistics (BGR, /255 then COCO mean/std ->
    ``PIXEL_MEAN = 255 * mean``), Adam without weight decay, no test resize (the authors test
    at the original resolution, padded centred to ``H | 127``)."""
    cfg.MODEL.CORNERNET = CN()
    c = cfg.MODEL.CORNERNET
    c.NUM_CLASSES = 80
    c.IN_FEATURES = ["hg0", "hg1"]  # one per supervised stack; the last one is used at test
    c.POOL_CHANNELS = 128  # width of the pooled branches of the corner/centre pooling modules
    c.HEAD_CONV = 256  # width of the first head conv
    c.HEAD_KERNEL = 3  # first head conv: 3x3 (CornerNet, Triplets) or 1x1 (CornerNet-Squeeze)
    c.PRIOR_BIAS = -2.19  # heatmap final-conv bias
    # Targets (common.assigners.gaussian): CornerNet after commit 3e71377b: the fixed formula at
    # 0.3; CenterNet-Triplets: the original formula at 0.7 (db/detection.py default).
    c.GAUSSIAN_RADIUS_VARIANT = "cornernet_fixed"
    c.MIN_OVERLAP = 0.3
    c.CENTER_SIGMA_DIVISOR = 5.0  # Triplets' centre heatmap: sigma = diameter / 5 (delte=5)
    # Losses: [focal + PULL_WEIGHT pull + PUSH_WEIGHT push + OFF_WEIGHT offsets] / stacks. pull and
    # push are averaged over the images of the batch (the authors sum them over each GPU's chunk,
    # so their 0.1 acts as 0.1 x images per GPU; the COCO configs set that product).
    c.FOCAL_WEIGHT = 1.0
    c.PULL_WEIGHT = 0.1
    c.PUSH_WEIGHT = 0.1
    c.OFF_WEIGHT = 1.0
    c.PUSH_MARGIN = 1.0
    c.FOCAL_ALPHA = 2.0
    c.FOCAL_BETA = 4.0
    # Inference (db/detection.py, config/CornerNet.json).
    c.TOPK = 100  # corners per type (K; Squeeze 20, Triplets 70); also the number of centres
    c.AE_THRESHOLD = 0.5  # max |e_tl - e_br| of a pair
    c.NMS_KERNEL = 3  # max-pool size of the peak extraction
    c.NUM_DETS = 1000  # pairs kept per image and test input
    c.MAX_PER_IMAGE = 100
    c.FLIP_TEST = True  # CornerNet always; CornerNet-Lite's Squeeze config: False
    c.TEST_SCALES = [1.0]
    c.MERGE_BBOX = False  # multi-scale configs: soft_nms_merge with WEIGHT_EXP
    c.WEIGHT_EXP = 10.0
    c.SOFT_NMS_METHOD = "gaussian"  # "exp_soft_nms" (method 2)
    c.SOFT_NMS_SIGMA = 0.5
    c.SOFT_NMS_IOU_THRESH = 0.5  # Nt (unused by the Gaussian method)
    c.SOFT_NMS_SCORE_THRESH = 0.001
    c.SOFT_NMS_PLUS_ONE = True  # the Cython IoU's legacy +1 widths
    c.TEST_PAD_CENTERED = True  # pad to (H | (d - 1)) x (W | (d - 1)) with the image centred
    # Triplets only: boxes with a corner more than this many pixels outside the (scaled) image are
    # dropped (Duankaiwen/CenterNet test/coco.py _rescale_dets); < 0 disables (CornerNet).
    c.OUTSIDE_BORDER = -1.0
    # Triplets' central region (test/coco.py): n = 3 for boxes of area <= CENTER_REGION_AREA
    # (original-image pixels), else n = 5.
    c.CENTER_REGION_AREA = 22500.0
    c.CENTER_REGION_N = (3, 5)

    # CornerNet-Saccade (CornerNet-Lite Sec. 3; [CNL] core/dbs/detection.py defaults overridden by
    # configs/CornerNet_Saccade.json, core/test/cornernet_saccade.py). Used by CornerNetSaccade only.
    c.SACCADE = CN()
    s = c.SACCADE
    # Hourglass level (0 = outermost, stride 4) read by each attention map, in the authors' order:
    # innermost merge (large objects) first. The map's stride (16, 8, 4) is the level's stride.
    s.ATT_LEVELS = (2, 1, 0)
    s.ATT_RANGES = ((96, 256), (32, 96), (0, 32))  # max side (input px, inclusive) of the objects each map marks
    s.ATT_WEIGHT = 1.0
    s.INIT_SIZES = (192, 255)  # longest side of the downsized whole-image inputs
    s.ATT_THRESHOLDS = (0.3,)  # one value per zoom iteration
    s.ATT_SCALES = ((1, 2, 4),)  # per iteration, per attention map: zoom relative to the source image's scale
    s.ATT_MAX_CROPS = 30
    s.ATT_NMS_KERNEL = 3
    s.MAX_SOURCE_SCALE = 2.0  # attention of inputs zoomed more than this is not followed
    s.MAX_CROP_SCALE = 4.0  # crops zoomed more than this are not taken
    s.REF_DETS = True  # also zoom on the confident detections of the downsized images
    s.REF_SCORE_THRESH = 0.5
    s.REF_SIZES = ((96, 192), (32, 64), (0, 24))  # (max side >, zoomed max side): > 96 -> 192, > 32 -> 64, else 24
    s.INIT_SCORE_THRESH = 0.3  # detections of the downsized images kept in the result
    s.LOCATION_NMS_DIST = 16.0  # crop centres closer than this (zoomed px, on either axis) ...
    s.LOCATION_NMS_SCALE_RATIO = (0.8, 1.2)  # ... with a zoom ratio in this range are merged

    cfg.INPUT.CORNERNET = CN()
    i = cfg.INPUT.CORNERNET
    i.TRAIN_SIZE = (511, 511)  # (h, w) of the training input
    i.SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # np.arange(0.6, 1.4, 0.1)
    i.BORDER = 128
    i.RANDOM_CROP = True
    i.COLOR_AUG = True
    i.COLOR_JITTER = 0.4
    i.LIGHTING_STD = 0.1
    i.KEEP_CROWD = True  # the authors train on every annotation of the image
    i.MAX_OBJECTS = 128  # max_tag_len
    # COCO PCA of the pixel colours in BGR order, /255 units (_eig_val / _eig_vec of the authors).
    i.EIG_VAL = list(COCO_EIG_VAL)
    i.EIG_VEC = [list(v) for v in COCO_EIG_VEC]
    # CornerNet-Saccade training crops ([CNL] core/sample/cornernet_saccade.py): a random object of
    # max side > 96 / > 32 / else is zoomed to a max side drawn from randint(96, 255) / (32, 97) /
    # (16, 33); the TRAIN_SIZE window contains it (or, with RAND_CENTER and p = 0.5, is centred
    # on it +- randint(0, CENTER_JITTER)); images without objects use a scale from SCALES.
    # Objects less than MIN_VISIBLE visible after the crop, or with max side < MIN_SCALE, are
    # ignored (not positives, no negatives around their corners).
    i.SACCADE = CN()
    i.SACCADE.REF_SIZE_THRESHOLDS = (96, 32)
    i.SACCADE.REF_SCALE_RANGES = ((96, 255), (32, 97), (16, 33))
    i.SACCADE.RAND_CENTER = True
    i.SACCADE.CENTER_JITTER = 15
    i.SACCADE.MIN_SCALE = 16
    i.SACCADE.MIN_VISIBLE = 0.5

    cfg.MODEL.PIXEL_MEAN = list(COCO_BGR_PIXEL_MEAN)
    cfg.MODEL.PIXEL_STD = list(COCO_BGR_PIXEL_STD)
    cfg.INPUT.FORMAT = "BGR"
    cfg.INPUT.MIN_SIZE_TEST = 0
    cfg.INPUT.MAX_SIZE_TEST = 0
    cfg.SOLVER.OPTIMIZER = "ADAM"  # nnet/py_factory.py: torch.optim.Adam(params), no weight decay
    cfg.SOLVER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    add_hourglass_config(cfg)
