#!/usr/bin/env python
"""Plot the training curves of a run: ``OUTPUT_DIR/metrics.json`` -> ``OUTPUT_DIR/curves.png``.

    python tools/plot_metrics.py output/sparsercnn_bccd
    python tools/plot_metrics.py output/sparsercnn_bccd --output curves_r18.png --ncols 3

One panel per curve: total and per-term losses, lr, and every evaluation metric (``bbox/AP``,
``bbox/AP50``, ..., ``bbox/AP-<class>``) over iterations; see ``common.engine.plot_hook``.
``DefaultTrainer`` writes the same figure at the end of training and after each evaluation.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from common.engine.plot_hook import metric_panels, plot_metrics  # noqa: E402


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="a training OUTPUT_DIR (holding metrics.json), "
                        "or a metrics.json file")
    parser.add_argument("--output", default="", help="PNG to write (default: <OUTPUT_DIR>/curves.png)")
    parser.add_argument("--ncols", type=int, default=4, help="panels per row")
    args = parser.parse_args(argv)
    json_file = args.output_dir if args.output_dir.endswith(".json") else os.path.join(args.output_dir, "metrics.json")
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(json_file)), "curves.png")
    try:
        fig = plot_metrics(json_file, output, ncols=args.ncols)
    except (FileNotFoundError, ValueError) as e:
        parser.error(str(e))
    titles = [ax.get_title() for ax in fig.axes]
    print(f"wrote {output}: {len(titles)} panels ({', '.join(titles)})")
    return output


if __name__ == "__main__":
    main()
