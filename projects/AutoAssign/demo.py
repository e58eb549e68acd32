#!/usr/bin/env python
"""AutoAssign demo: run a model on images and save them with the detections drawn.

    python projects/AutoAssign/demo.py --config-file projects/AutoAssign/configs/autoassign.bccd.res18.yaml \
        --input datasets/bccd/images/BloodImage_00000.jpg --output out/ --confidence-threshold 0.3 \
        --opts MODEL.WEIGHTS output/autoassign_bccd/model_final.pth
"""
import os
import sys

# The repo root provides ``common`` and ``projects``; one canonical import name for the project.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.utils.demo import main  # noqa: E402
from projects.AutoAssign.autoassign import add_autoassign_config  # noqa: E402

if __name__ == "__main__":
    main(config_adders=[add_autoassign_config])
