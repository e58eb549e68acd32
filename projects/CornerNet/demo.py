#!/usr/bin/env python
"""CornerNet / CenterNet-Triplets demo: run a model on images and save them with the detections drawn.

    python projects/CornerNet/demo.py --config-file projects/CornerNet/configs/cornernet.bccd.yaml \
        --input datasets/bccd/images/BloodImage_00000.jpg --output out/ --confidence-threshold 0.3 \
        --opts MODEL.WEIGHTS output/cornernet_bccd/model_final.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.utils.demo import main  # noqa: E402
from projects.CornerNet.cornernet import add_cornernet_config  # noqa: E402

if __name__ == "__main__":
    main(config_adders=[add_cornernet_config])
