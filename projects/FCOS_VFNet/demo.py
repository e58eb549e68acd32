#!/usr/bin/env python
"""FCOS / ATSS / VFNet demo: run a model on images and save them with the detections drawn.

    python projects/FCOS_VFNet/demo.py --config-file projects/FCOS_VFNet/configs/fcos.bccd.res18.yaml \
        --input datasets/bccd/images/BloodImage_00000.jpg --output out/ --confidence-threshold 0.3 \
        --opts MODEL.WEIGHTS output/fcos_bccd/model_final.pth
"""
import os
import sys

# The repo root provides ``common`` and ``projects``; one canonical import name for the project.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.utils.demo import main  # noqa: E402
from projects.FCOS_VFNet.fcos_vfnet import add_fcos_vfnet_config  # noqa: E402

if __name__ == "__main__":
    main(config_adders=[add_fcos_vfnet_config])
