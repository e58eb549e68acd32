#!/usr/bin/env python
"""Draw the ground truth of the training set, raw or as the train mapper feeds it (detectron2's
``tools/visualize_data.py``).

    python tools/visualize_data.py --config-file projects/OneNet/configs/onenet.bccd.res18.yaml \
        --source annotation --output vis/bccd_gt
    python tools/visualize_data.py --config-file projects/CenterNet/configs/centernet.bccd.res18.yaml \
        --source dataloader --output vis/centernet_aug --num-images 16

``--source annotation``: every dataset dict of ``DATASETS.TRAIN`` drawn on its original image
(``<file name>``). ``--source dataloader``: the images and ``gt_boxes`` / ``gt_classes`` of the
project's training loader (its ``train_net.Trainer.build_train_loader``, i.e. the project's train
mapper with its augmentation: resize, crop, flip, CenterNet's affine warp and colour jitter),
written as ``<image_id>.jpg`` (``<image_id>_<k>.jpg`` for the k-th repetition). Boxes are
labelled with the dataset's class names. ``--show`` also opens a window per image (OpenCV).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.export.project import project_trainer, setup_project_cfg  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Visualize ground-truth data")
    parser.add_argument("--source", choices=["annotation", "dataloader"], required=True,
                        help="visualize the annotations or the data loader (with pre-processing)")
    parser.add_argument("--config-file", metavar="FILE", required=True, help="path to config file")
    parser.add_argument("--output", "--output-dir", dest="output_dir", default="./",
                        help="folder for the drawn images")
    parser.add_argument("--show", action="store_true", help="show each image in a window")
    parser.add_argument("--num-images", type=int, default=0,
                        help="stop after this many images (default: every image of DATASETS.TRAIN once)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def _class_names(metadata, n_needed: int) -> List[str]:
    names = list(metadata.get("thing_classes", None) or [])
    if len(names) < n_needed:
        names += [str(i) for i in range(len(names), n_needed)]
    return names


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Run the tool; returns the paths written."""
    args = parse_args(argv)
    from common.data import DatasetCatalog, MetadataCatalog
    from common.data.detection_utils import convert_image_to_rgb, read_image
    from common.utils.visualizer import Visualizer

    cfg = setup_project_cfg(args.config_file, args.opts, freeze=False)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.freeze()
    if isinstance(cfg.DATASETS.TRAIN, str) or not cfg.DATASETS.TRAIN:
        raise SystemExit(f"DATASETS.TRAIN must be a non-empty tuple of dataset names, got {cfg.DATASETS.TRAIN!r}")
    os.makedirs(args.output_dir, exist_ok=True)
    dicts = list(itertools.chain.from_iterable(DatasetCatalog.get(k) for k in cfg.DATASETS.TRAIN))
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    limit = args.num_images if args.num_images > 0 else len(dicts)
    written: List[str] = []

    def output(vis, fname: str) -> None:
        path = os.path.join(args.output_dir, fname)
        if args.show:
            import cv2

            cv2.imshow("window", vis.get_image()[:, :, ::-1])
            cv2.waitKey()
        vis.save(path)
        written.append(path)

    if args.source == "dataloader":
        loader = project_trainer(args.config_file).build_train_loader(cfg)
        seen: Counter = Counter()
        batches = iter(loader)
        while len(written) < limit:
            for per_image in next(batches):
                if len(written) >= limit:
                    break
                img = per_image["image"].permute(1, 2, 0).cpu().detach().numpy()
                img = convert_image_to_rgb(img, cfg.INPUT.FORMAT)
                inst = per_image["instances"]
                classes = inst.gt_classes.tolist() if inst.has("gt_classes") else []
                names = _class_names(metadata, max(classes, default=-1) + 1)
                vis = Visualizer(img, metadata=metadata).overlay_instances(
                    labels=[names[c] for c in classes], boxes=inst.gt_boxes if inst.has("gt_boxes") else None
                )
                key = str(per_image.get("image_id", len(written)))
                k = seen[key]
                seen[key] += 1
                output(vis, f"{key}.jpg" if k == 0 else f"{key}_{k}.jpg")
    else:
        for dic in dicts[:limit]:
            img = read_image(dic["file_name"], "RGB")
            vis = Visualizer(np.asarray(img), metadata=metadata).draw_dataset_dict(dic)
            output(vis, os.path.basename(dic["file_name"]))
    print(f"wrote {len(written)} images to {args.output_dir}")
    return written


if __name__ == "__main__":
    main()
