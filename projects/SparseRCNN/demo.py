#!/usr/bin/env python
"""Sparse R-CNN demo: run a trained model on images and save them with the detections drawn.

    python projects/SparseRCNN/demo.py --config-file projects/SparseRCNN/configs/sparsercnn.bccd.res18.yaml \
        --input datasets/bccd/images/BloodImage_00000.jpg --output out/ --confidence-threshold 0.2 \
        --opts MODEL.WEIGHTS output/sparsercnn_bccd/model_final.pth
"""
import os
import sys

# The repo root provides ``common`` and ``projects``; one canonical import name for the project.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.utils.demo import main  # noqa: E402
from projects.SparseRCNN.sparsercnn import add_sparsercnn_config  # noqa: E402

if __name__ == "__main__":
    main(config_adders=[add_sparsercnn_config])
