#!/usr/bin/env python
"""Sparse R-CNN training / evaluation script (detectron2 ``train_net.py`` CLI).

Examples (from the repository root)::

    python projects/SparseRCNN/train_net.py --config-file projects/SparseRCNN/configs/sparsercnn.bccd.res18.yaml
    python projects/SparseRCNN/train_net.py --config-file <cfg> --eval-only MODEL.WEIGHTS <model.pth>
    python projects/SparseRCNN/train_net.py --num-gpus 8 --config-file projects/SparseRCNN/configs/sparsercnn.res50.100pro.3x.yaml
"""
import logging
import os
import sys
from collections import OrderedDict

# The repo root provides ``common`` and ``projects`` (also without ``pip install -e``). The
# project is imported under its one canonical name, so that its registration in
# META_ARCH_REGISTRY happens once even when tests or tools import it too.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.data import build_detection_train_loader  # noqa: E402
from common.engine import DefaultTrainer  # noqa: E402
from common.engine.train_net import run  # noqa: E402
from common.solver import build_optimizer_uniform_decay  # noqa: E402
from projects.SparseRCNN.sparsercnn import (  # noqa: E402
    SparseRCNNDatasetMapper,
    SparseRCNNWithTTA,
    add_sparsercnn_config,
)


class Trainer(DefaultTrainer):
    """DefaultTrainer with the DETR-style train mapper (flip, multi-scale resize, optional crop), the
    authors' optimizer and, with ``TEST.AUG.ENABLED``, their test-time augmentation: every
    :meth:`test` (``--eval-only`` and the evaluations during/after training) also reports the
    ``SparseRCNNWithTTA`` results under ``<name>_TTA`` keys (the authors run it in ``--eval-only``).
    """

    @classmethod
    def build_optimizer(cls, cfg, model):
        """The authors' recipe: SOLVER.WEIGHT_DECAY on every parameter (norms and biases included),
        BACKBONE_MULTIPLIER on "backbone" names, AdamW, full-model gradient clipping."""
        return build_optimizer_uniform_decay(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=SparseRCNNDatasetMapper(cfg, is_train=True))

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        res = super().test(cfg, model, evaluators)
        if cfg.TEST.AUG.ENABLED and not isinstance(model, SparseRCNNWithTTA):
            res.update(cls.test_with_TTA(cfg, model))
        return res

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``SparseRCNNWithTTA(cfg, model)`` on ``DATASETS.TEST`` (outputs in
        ``OUTPUT_DIR/inference_TTA``); result keys get a ``_TTA`` suffix."""
        logging.getLogger("projects.SparseRCNN.train_net").info("Running inference with test-time augmentation ...")
        model = SparseRCNNWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA"))
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, model, evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in res.items())


if __name__ == "__main__":
    run([add_sparsercnn_config], Trainer)
