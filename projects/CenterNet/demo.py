#!/usr/bin/env python
"""CenterNet demo: run a trained model on images and save them with the detections drawn.

    python projects/CenterNet/demo.py --config-file projects/CenterNet/configs/centernet.bccd.res18.yaml \
        --input datasets/bccd/images/BloodImage_00000.jpg --output out/ --confidence-threshold 0.3 \
        --opts MODEL.WEIGHTS output/centernet_bccd/model_final.pth
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from common.utils.demo import main  # noqa: E402
from projects.CenterNet.centernet import add_centernet_config  # noqa: E402

if __name__ == "__main__":
    main(config_adders=[add_centernet_config])
