"""Default CLI, set-up, predictor and trainer (detectron2 v0.6 ``detectron2/engine/defaults.py``).

These are the conventions of detectron2's ``tools/train_net.py``: ``--config-file``, ``--resume``,
``--eval-only``, ``--num-gpus`` and trailing ``KEY VALUE`` overrides; ``OUTPUT_DIR`` holds
``config.yaml``, ``log.txt``, ``metrics.json``, TensorBoard events, ``model_XXXXXXX.pth``,
``model_final.pth``, ``last_checkpoint`` and ``inference/``.
"""
from __future__ import annotations

import argparse
import inspect
import logging
import os
import sys
import tempfile
import weakref
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from common.checkpoint import DetectionCheckpointer
from common.solver import build_lr_scheduler, build_optimizer
from common.utils import comm
from common.utils.env import collect_env_info, seed_all_rng
from common.utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from common.utils.logger import setup_logger

from . import hooks
from .plot_hook import PlotMetricsHook
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "apply_checkpoint_metadata",
    "check_output_dir",
    "create_ddp_model",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "DefaultPredictor",
    "DefaultTrainer",
]

_LOGGER_NAMES = ("common", "fvcore", "projects")


def create_ddp_model(model: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when the world size is > 1 (else return it).

    ``device_ids`` defaults to ``[local rank]`` for a CUDA model and to ``None`` for a CPU model
    (Gloo). ``kwargs`` go to ``DistributedDataParallel``.
    """
    if comm.get_world_size() == 1:
        return model
    if "device_ids" not in kwargs:
        on_cuda = any(p.is_cuda for p in model.parameters())
        kwargs["device_ids"] = [comm.get_local_rank()] if on_cuda else None
    return DistributedDataParallel(model, **kwargs)


def _no_buffer_sync_kwargs() -> Dict[str, bool]:
    # detectron2 passes broadcast_buffers=False (no per-forward buffer sync: BN statistics stay
    # per rank, as with SyncBN off); newer torch renamed the option.
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in params:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def default_argument_parser(epilog: Optional[str] = None) -> argparse.ArgumentParser:
    """detectron2's training/evaluation command line.

    Flags: ``--config-file FILE``, ``--resume``, ``--eval-only``, ``--num-gpus N`` (per machine),
    ``--num-machines``, ``--machine-rank``, ``--dist-url`` (default ``tcp://127.0.0.1:<port from
    uid>``), and trailing ``opts`` (``KEY VALUE`` pairs merged into the config).
    """
    parser = argparse.ArgumentParser(
        epilog=epilog
        or """
Examples:

Run on single machine:
    $ {0} --num-gpus 8 --config-file cfg.yaml

Change some config options:
    $ {0} --config-file cfg.yaml MODEL.WEIGHTS /path/to/weight.pth SOLVER.BASE_LR 0.001

Run on CPU with two processes:
    $ {0} --num-gpus 2 --config-file cfg.yaml MODEL.DEVICE cpu

Run on multiple machines:
    (machine0)$ {0} --machine-rank 0 --num-machines 2 --dist-url <URL> [--other-flags]
    (machine1)$ {0} --machine-rank 1 --num-machines 2 --dist-url <URL> [--other-flags]
""".format(sys.argv[0]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Resume from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration) "
        "if it exists; otherwise MODEL.WEIGHTS only initialises the model.",
    )
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--num-gpus", type=int, default=1, help="number of gpus *per machine*")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    # PyTorch still may leave orphan processes in multi-gpu training; a port derived from the
    # uid avoids collisions between users sharing a machine.
    uid = os.getuid() if sys.platform != "win32" else 1
    port = 2**15 + 2**14 + hash(uid) % 2**14
    parser.add_argument(
        "--dist-url",
        default="tcp://127.0.0.1:{}".format(port),
        help="initialization URL for pytorch distributed backend; 'auto' picks a free local port. "
        "See https://pytorch.org/docs/stable/distributed.html for details.",
    )
    parser.add_argument(
        "opts",
        help="Modify config options at the end of the command, as space-separated "
        "'PATH.KEY VALUE' pairs, e.g. SOLVER.BASE_LR 0.001 MODEL.DEVICE cpu",
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def default_setup(cfg: Any, args: Any, *, extra_loggers: Sequence[str] = ()) -> None:
    """Prepare a run: create ``OUTPUT_DIR``, set up loggers (``common``, ``fvcore``, ``projects``
    and ``extra_loggers``, e.g. a project package such as ``sparsercnn``; ``log.txt``), log
    environment/arguments/config, dump ``OUTPUT_DIR/config.yaml``, seed RNGs with ``SEED + rank``
    (random when ``SEED < 0``) and set ``cudnn.benchmark``.
    """
    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)

    rank = comm.get_rank()
    for name in dict.fromkeys(list(_LOGGER_NAMES[1:]) + list(extra_loggers)):
        if name != "common":
            setup_logger(output_dir, distributed_rank=rank, name=name)
    logger = setup_logger(output_dir, distributed_rank=rank, name="common")

    logger.info("Rank of current process: {}. World size: {}".format(rank, comm.get_world_size()))
    logger.info("Environment info:\n" + collect_env_info())
    logger.info("Command line arguments: " + str(args))
    config_file = getattr(args, "config_file", "")
    if config_file:
        with open(config_file, "r") as f:
            logger.info("Contents of args.config_file={}:\n{}".format(config_file, f.read()))

    logger.info("Running with full config:\n{}".format(cfg))
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to {}".format(path))

    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)

    # cudnn benchmark only pays off with fixed input sizes, and slows down evaluation.
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def default_writers(output_dir: str, max_iter: Optional[int] = None) -> List[EventWriter]:
    """Console printer, ``output_dir/metrics.json`` and TensorBoard events in ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def _metadata_from_dict(name: str, values: Dict[str, Any]) -> Any:
    from common.data.catalog import Metadata

    meta = Metadata(name=name)
    meta.set(**values)
    return meta


class DefaultPredictor:
    """Single-image inference: build the model, load ``MODEL.WEIGHTS``, resize, run.

    Called with one ``(H, W, C)`` uint8 image in **BGR** order (as from ``cv2.imread``); the
    image is converted to RGB when ``INPUT.FORMAT == "RGB"``, resized with
    ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` and passed as
    ``model([{"image": (C, H', W') float32, "height": H, "width": W}])``. Returns the model's
    output for that image, e.g. ``{"instances": Instances}`` in original-image pixels.

    Attributes:
        metadata: ``Metadata`` from the checkpoint's ``"metadata"`` entry when present (e.g.
            ``thing_classes``), else ``MetadataCatalog.get(DATASETS.TEST[0])``, else empty.

    Raises:
        ValueError: ``INPUT.FORMAT`` not RGB/BGR; input not an ``(H, W, 3)`` array.
    """

    def __init__(self, cfg: Any) -> None:
        from common.data import MetadataCatalog
        from common.data import transforms as T
        from common.modeling import build_model

        self.cfg = cfg.clone()
        self.model = build_model(self.cfg)
        self.model.eval()

        checkpointer = DetectionCheckpointer(
            self.model, min_matched_fraction=cfg.MODEL.get("WEIGHTS_MIN_MATCHED_FRACTION", 0.0)
        )
        extra = checkpointer.load(cfg.MODEL.WEIGHTS)
        ckpt_meta = extra.get("metadata") if isinstance(extra, dict) else None
        if isinstance(ckpt_meta, dict) and ckpt_meta:
            self.metadata = _metadata_from_dict("checkpoint:" + os.path.basename(cfg.MODEL.WEIGHTS), ckpt_meta)
        elif len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        else:
            self.metadata = _metadata_from_dict("__unused", {})

        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError("INPUT.FORMAT must be 'RGB' or 'BGR', got {!r}".format(self.input_format))

    def __call__(self, original_image: np.ndarray) -> Dict[str, Any]:
        """
        Args:
            original_image: ``(H, W, 3)`` uint8, BGR.

        Returns:
            the model's prediction dict for this image.
        """
        if not isinstance(original_image, np.ndarray) or original_image.ndim != 3 or original_image.shape[2] != 3:
            raise ValueError(
                "DefaultPredictor expects an (H, W, 3) BGR uint8 numpy array, got {}".format(
                    getattr(original_image, "shape", type(original_image))
                )
            )
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            image = self.aug.get_transform(original_image).apply_image(original_image)
            image = torch.as_tensor(np.ascontiguousarray(image).astype("float32").transpose(2, 0, 1))
            inputs = {"image": image, "height": height, "width": width}
            return self.model([inputs])[0]


def _opts_keys(opts: Optional[Sequence[str]]) -> set:
    opts = list(opts or [])
    return set(opts[0::2])


def apply_checkpoint_metadata(cfg: Any, weights: str, explicit_keys: Sequence[str] = ()) -> Dict[str, Any]:
    """Take the class count of the model from the ``metadata`` of the checkpoint it will load
    (``--eval-only``, the demo), unless the user set that key on the command line.

    Args:
        cfg: an unfrozen config; its class-count key (``common.data.num_classes_key``) is set to
            ``len(metadata["thing_classes"])`` when they differ.
        weights: the checkpoint path (``MODEL.WEIGHTS`` or the resumed file).
        explicit_keys: keys given on the command line (they win).

    Returns:
        the checkpoint's metadata (``{}`` when it has none).
    """
    from common.checkpoint import read_checkpoint_metadata
    from common.data import num_classes_key

    meta = read_checkpoint_metadata(weights)
    classes = meta.get("thing_classes")
    key = num_classes_key(cfg)
    if classes is None or key is None or key in set(explicit_keys):
        return meta
    if meta.get("num_classes_key") not in (None, key):
        return meta  # another architecture's file: loading reports it
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        node = node[part]
    if int(node[parts[-1]]) != len(classes):
        logging.getLogger(__name__).info(
            "{} = {} taken from the checkpoint {} (classes: {}).".format(
                key, len(classes), weights, ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
            )
        )
        node[parts[-1]] = len(classes)
    return meta


def _previous_run(output_dir: str) -> Optional[Dict[str, Any]]:
    import yaml

    path = os.path.join(output_dir, "config.yaml")
    if not output_dir or not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            prev = yaml.safe_load(f) or {}
    except Exception:
        return None
    return {
        "datasets": tuple(prev.get("DATASETS", {}).get("TRAIN", ()) or ()),
        "arch": prev.get("MODEL", {}).get("META_ARCHITECTURE"),
    }


def check_output_dir(cfg: Any, resume: bool) -> None:
    """Before a training run writes into ``OUTPUT_DIR``: refuse ``--resume`` of another run
    (other ``DATASETS.TRAIN`` or ``MODEL.META_ARCHITECTURE``), and warn when a fresh run is about
    to overwrite the checkpoints of a previous one.

    Raises:
        ValueError: ``--resume`` and ``OUTPUT_DIR`` holds a run of other data or architecture.
    """
    output_dir = cfg.OUTPUT_DIR
    has_ckpt = bool(output_dir) and (
        os.path.isfile(os.path.join(output_dir, "last_checkpoint"))
        or any(f.startswith("model_") and f.endswith(".pth") for f in os.listdir(output_dir))
        if os.path.isdir(output_dir)
        else False
    )
    if not has_ckpt:
        return
    prev = _previous_run(output_dir)
    current = {"datasets": tuple(cfg.DATASETS.TRAIN), "arch": cfg.MODEL.META_ARCHITECTURE}
    other = prev is not None and (prev["datasets"] != current["datasets"] or prev["arch"] != current["arch"])
    logger = logging.getLogger(__name__)
    if resume and other:
        raise ValueError(
            "--resume: OUTPUT_DIR {} holds a run of {} on {} but this config trains {} on {}. Set OUTPUT_DIR "
            "to a new directory (or to that run's directory to continue it).".format(
                output_dir, prev["arch"], prev["datasets"], current["arch"], current["datasets"]
            )
        )
    if not resume:
        what = "another run ({} on {})".format(prev["arch"], prev["datasets"]) if other else "a previous run"
        logger.warning(
            "OUTPUT_DIR {} holds the checkpoints of {}; this run starts from scratch and overwrites them. "
            "Use --resume to continue it, or set OUTPUT_DIR to another directory.".format(output_dir, what)
        )


def _check_dataset_names(cfg: Any) -> None:
    train = cfg.DATASETS.TRAIN
    if isinstance(train, str):
        raise ValueError(
            "DATASETS.TRAIN must be a tuple of dataset names, got the string {!r}; write "
            "DATASETS.TRAIN \"('{}',)\" on the command line or a YAML list.".format(train, train)
        )
    if len(train) == 0:
        raise ValueError("DATASETS.TRAIN is empty: set it to the registered training dataset(s).")
    if isinstance(cfg.DATASETS.TEST, str):
        raise ValueError(
            "DATASETS.TEST must be a tuple of dataset names, got the string {!r}; write "
            "DATASETS.TEST \"('{}',)\".".format(cfg.DATASETS.TEST, cfg.DATASETS.TEST)
        )


def _shared_resume_file(checkpointer: DetectionCheckpointer, resume: bool) -> Optional[str]:
    """The checkpoint file every process resumes from, or None (no resume).

    The main process decides (see ``DetectionCheckpointer.resume_or_load`` for the fallback to
    an older file); a process that cannot read that file (e.g. ``OUTPUT_DIR`` on another
    machine's disk) receives its bytes from the main process and reads a local copy.
    """
    if not resume or not checkpointer.save_dir:
        return None
    chosen: Optional[str] = None
    if comm.is_main_process():
        for candidate in checkpointer._checkpoint_candidates():
            if not os.path.isfile(candidate):
                continue
            try:
                data = checkpointer._load_file(candidate)
            except Exception as e:  # broken file: try the previous one
                logging.getLogger(__name__).warning(
                    "Cannot resume from {} ({}: {}); trying the previous checkpoint.".format(
                        candidate, type(e).__name__, str(e).splitlines()[0][:200] if str(e) else ""
                    )
                )
                continue
            checkpointer._preloaded = (candidate, data)  # read once
            chosen = candidate
            break
        else:
            if checkpointer._checkpoint_candidates():
                raise RuntimeError(
                    "--resume: no readable checkpoint in {}. Remove the broken files or start without "
                    "--resume.".format(checkpointer.save_dir)
                )
    if comm.get_world_size() == 1:
        return chosen
    chosen = comm.all_gather(chosen)[0]
    if chosen is None:
        return None
    readable = comm.all_gather(os.path.isfile(chosen))
    if all(readable):
        return chosen
    logging.getLogger(__name__).info("Broadcasting {} to the processes that cannot read it".format(chosen))
    payload = None
    if comm.is_main_process():
        with open(chosen, "rb") as f:
            payload = f.read()
    payloads = comm.all_gather(payload if comm.is_main_process() else None)
    if os.path.isfile(chosen):
        return chosen
    local = os.path.join(tempfile.mkdtemp(prefix="resume_rank{}_".format(comm.get_rank())), os.path.basename(chosen))
    with open(local, "wb") as f:
        f.write(payloads[0])
    return local


class DefaultTrainer(TrainerBase):
    """Trainer with detectron2's default behaviour.

    Builds model, optimizer, train loader, LR scheduler and checkpointer from ``cfg`` through
    overridable classmethods (``build_model``, ``build_optimizer``, ``build_lr_scheduler``,
    ``build_train_loader``, ``build_test_loader``, ``build_evaluator``); wraps the model in DDP
    when the world size is > 1 (``find_unused_parameters`` from the class attribute of that name);
    runs a :class:`SimpleTrainer` or :class:`AMPTrainer` (``SOLVER.AMP.ENABLED``) with the default
    hooks (:meth:`build_hooks`).

    Checkpoints have detectron2's layout: ``model``, ``trainer`` (``iteration``, ``hooks`` with
    the LR scheduler's state, ``_trainer`` with ``optimizer`` and, with AMP, ``grad_scaler``),
    ``iteration``, and ``metadata`` = ``{"thing_classes", "meta_architecture",
    "num_classes_key"}`` (classes of ``DATASETS.TRAIN[0]``), which ``--eval-only`` and the demo
    read. With ``SEED >= 0`` the data stream, the augmentations and the model's random draws are
    functions of the seed and the iteration, so ``--resume`` after a kill continues exactly.

    Raises:
        ValueError: ``DATASETS.TRAIN`` empty or a string.
    """

    find_unused_parameters: bool = False

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        logger = logging.getLogger("common")
        if not logger.isEnabledFor(logging.INFO):
            setup_logger()
        _check_dataset_names(cfg)
        from common.data import register_datasets_from_config

        register_datasets_from_config(cfg)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)

        model = create_ddp_model(
            model, find_unused_parameters=self.find_unused_parameters, **_no_buffer_sync_kwargs()
        )
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        # detectron2's layout: one "trainer" entry holding the iteration, the optimizer (and AMP
        # scaler) and every hook's state (the LR scheduler's among them).
        self.checkpointer = DetectionCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            min_matched_fraction=cfg.MODEL.get("WEIGHTS_MIN_MATCHED_FRACTION", 0.0),
            trainer=weakref.proxy(self),
        )
        self.checkpointer.extra_data["metadata"] = self._train_metadata(cfg)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._seed = cfg.SEED if cfg.SEED >= 0 else None

        self.register_hooks(self.build_hooks())

    @staticmethod
    def _train_metadata(cfg: Any) -> Dict[str, Any]:
        from common.data import MetadataCatalog

        from common.data import num_classes_key

        meta: Dict[str, Any] = {"meta_architecture": cfg.MODEL.META_ARCHITECTURE}
        classes = MetadataCatalog.get(cfg.DATASETS.TRAIN[0]).get("thing_classes", None)
        if classes is not None:
            meta["thing_classes"] = list(classes)
        key = num_classes_key(cfg)
        if key is not None:
            meta["num_classes_key"] = key
        return meta

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a checkpoint in ``OUTPUT_DIR``: load the model and the trainer state
        (optimizer, AMP scaler, LR scheduler and other hook states, iteration) and continue at
        ``iteration + 1``, with the data stream continuing where it stopped
        (:func:`common.data.set_train_loader_start`). Checkpoints of the earlier layout (separate
        ``optimizer``/``scheduler`` entries) are read too; a checkpoint without trainer state
        resumes the weights only, with a warning. If ``last_checkpoint`` names a missing or broken
        file, the newest readable ``model_*.pth`` is used. Without ``resume``: load only the model
        from ``MODEL.WEIGHTS`` and start at 0.

        In multi-process runs the processes that cannot read the checkpoint (another machine's
        disk) receive it from the main process.
        """
        from common.data import set_train_loader_start

        logger = logging.getLogger(__name__)
        resume_file = _shared_resume_file(self.checkpointer, resume)
        if resume_file is not None:
            try:
                data = self.checkpointer.load(resume_file)
            finally:
                self.checkpointer._preloaded = None
            self._finish_resume(data)
            self._last_resumed_from = resume_file
        else:
            self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=False)
            return
        logger.info("Resuming from iteration {} (SOLVER.MAX_ITER = {}).".format(self.start_iter, self.max_iter))
        if self.start_iter >= self.max_iter:
            logger.warning(
                "The checkpoint is at or past SOLVER.MAX_ITER = {}: nothing left to train. "
                "Raise SOLVER.MAX_ITER to continue training.".format(self.max_iter)
            )
        if not set_train_loader_start(self.data_loader, self.start_iter):
            logger.warning(
                "The data stream of the resumed run is not exactly the uninterrupted run's (aspect-ratio "
                "grouping without image sizes, or a custom loader)."
            )

    def _finish_resume(self, data: Dict[str, Any]) -> None:
        logger = logging.getLogger(__name__)
        if "trainer" not in self.checkpointer.missing_checkpointables:
            self.start_iter = self.iter + 1
            return
        # The earlier layout of this repository: separate optimizer/scheduler/grad_scaler entries.
        found = [k for k in ("optimizer", "scheduler", "grad_scaler") if k in data]
        if "optimizer" in data:
            self.optimizer.load_state_dict(data.pop("optimizer"))
        if "scheduler" in data:
            self.scheduler.load_state_dict(data.pop("scheduler"))
        if "grad_scaler" in data and isinstance(self._trainer, AMPTrainer):
            self._trainer.grad_scaler.load_state_dict(data.pop("grad_scaler"))
        self.iter = int(data.get("iteration", -1))
        self.start_iter = self.iter + 1
        missing = [k for k in ("optimizer", "scheduler") if k not in found]
        if missing:
            logger.warning(
                "--resume: the checkpoint has no trainer state ({} missing): the optimizer {} fresh and "
                "the LR schedule {} from iteration {}.".format(
                    ", ".join(missing),
                    "starts" if "optimizer" in missing else "is restored but starts",
                    "(warm-up included) restarts" if "scheduler" in missing else "continues",
                    self.start_iter,
                )
            )
        else:
            logger.info("Read the trainer state from the earlier layout ({}).".format(", ".join(found)))

    def build_hooks(self) -> List[Optional[HookBase]]:
        """IterationTimer, LRScheduler, PreciseBN (if enabled), PeriodicCheckpointer (main
        process), EvalHook (``TEST.EVAL_PERIOD`` and at the end), PeriodicWriter (main process,
        every 20 iterations), PlotMetricsHook (main process: ``OUTPUT_DIR/curves.png``)."""
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = 0  # PreciseBN's loader: save memory and start-up time

        ret: List[Optional[HookBase]] = [hooks.IterationTimer(), hooks.LRScheduler()]
        if cfg.TEST.PRECISE_BN.ENABLED:
            from fvcore.nn.precise_bn import get_bn_modules

            if get_bn_modules(self.model):
                ret.append(
                    hooks.PreciseBN(
                        cfg.TEST.EVAL_PERIOD, self.model, self.build_train_loader(cfg), cfg.TEST.PRECISE_BN.NUM_ITER
                    )
                )
        # Checkpoint before evaluation, so that a crash in evaluation loses no training.
        if comm.is_main_process():
            ret.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))

        def test_and_save_results():
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        if comm.is_main_process():
            # After evaluation, so that its results are written too.
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=20))
            # After the writer: curves.png from metrics.json after each evaluation and at the end.
            ret.append(PlotMetricsHook(self.cfg.OUTPUT_DIR))
        return ret

    def build_writers(self) -> List[EventWriter]:
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    def train(self) -> Optional[Dict[str, Any]]:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``.

        Returns:
            the last evaluation results (``None`` when no evaluation ran); checked against
            ``TEST.EXPECTED_RESULTS`` on the main process.
        """
        super().train(self.start_iter, self.max_iter)
        results = getattr(self, "_last_eval_results", None)
        if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
            from common.evaluation import verify_results

            assert results is not None, "No evaluation results obtained during training!"
            verify_results(self.cfg, results)
        return results

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        if self._seed is not None:
            # The model's random draws (dropout, sampling) depend on (SEED, rank, iteration) only,
            # so a resumed run repeats the uninterrupted run's.
            seed_all_rng((self._seed * 1_000_003 + comm.get_rank() * 7_919 + self.iter) % 2**31)
        self._trainer.run_step()

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])

    # Properties forwarded to the inner loop (the same objects the hooks see).
    @property
    def model(self) -> torch.nn.Module:
        return self._trainer.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._trainer.optimizer

    @property
    def data_loader(self) -> Any:
        return self._trainer.data_loader

    @classmethod
    def build_model(cls, cfg: Any) -> torch.nn.Module:
        from common.modeling import build_model

        model = build_model(cfg)
        logging.getLogger(__name__).info("Model:\n{}".format(model))
        return model

    @classmethod
    def build_optimizer(cls, cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: Any, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: Any):
        from common.data import build_detection_train_loader

        return build_detection_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: Any, dataset_name: str):
        from common.data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: Any, dataset_name: str, output_folder: Optional[str] = None):
        """``COCOEvaluator(dataset_name, output_dir=OUTPUT_DIR/inference)``: every project here
        evaluates COCO-format data (override for anything else)."""
        from common.evaluation import COCOEvaluator

        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder, backend=cfg.TEST.get("EVALUATOR_BACKEND", "auto"))

    @classmethod
    def test(cls, cfg: Any, model: torch.nn.Module, evaluators: Any = None) -> Dict[str, Any]:
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST``.

        Args:
            evaluators: ``None`` (use :meth:`build_evaluator`), one evaluator, or one per dataset.

        Returns:
            ``{dataset_name: results}``, or the single dataset's results when there is one.
        """
        from common.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format

        logger = logging.getLogger(__name__)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(cfg.DATASETS.TEST) != len(evaluators):
            raise ValueError(
                "{} evaluators given for {} datasets in DATASETS.TEST".format(len(evaluators), len(cfg.DATASETS.TEST))
            )
        results: Dict[str, Any] = OrderedDict()
        for idx, dataset_name in enumerate(cfg.DATASETS.TEST):
            data_loader = cls.build_test_loader(cfg, dataset_name)
            if evaluators is not None:
                evaluator = evaluators[idx]
            else:
                try:
                    evaluator = cls.build_evaluator(cfg, dataset_name)
                except NotImplementedError:
                    logger.warning(
                        "No evaluator found. Use `DefaultTrainer.test(evaluators=)`, "
                        "or implement its `build_evaluator` method."
                    )
                    results[dataset_name] = {}
                    continue
            results_i = inference_on_dataset(model, data_loader, evaluator)
            results[dataset_name] = results_i
            if comm.is_main_process():
                if not isinstance(results_i, dict):
                    raise ValueError(
                        "Evaluator must return a dict on the main process. Got {} instead.".format(results_i)
                    )
                logger.info("Evaluation results for {} in csv format:".format(dataset_name))
                print_csv_format(results_i)
        if len(results) == 1:
            results = list(results.values())[0]
        return results

    @staticmethod
    def auto_scale_workers(cfg: Any, num_workers: int) -> Any:
        """Rescale batch size, LR and schedule from ``SOLVER.REFERENCE_WORLD_SIZE`` to
        ``num_workers`` (linear scaling rule; off when the reference size is 0).

        ``IMS_PER_BATCH`` and ``BASE_LR`` are multiplied by ``num_workers / reference``;
        ``MAX_ITER``, ``WARMUP_ITERS``, ``STEPS``, ``EVAL_PERIOD`` and ``CHECKPOINT_PERIOD`` divided.
        """
        old_world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE
        if old_world_size == 0 or old_world_size == num_workers:
            return cfg
        logger = logging.getLogger(__name__)
        cfg = cfg.clone()
        frozen = cfg.is_frozen()
        cfg.defrost()
        if cfg.SOLVER.IMS_PER_BATCH % old_world_size != 0:
            raise ValueError(
                "SOLVER.IMS_PER_BATCH ({}) is not divisible by SOLVER.REFERENCE_WORLD_SIZE ({})".format(
                    cfg.SOLVER.IMS_PER_BATCH, old_world_size
                )
            )
        scale = num_workers / old_world_size
        bs = cfg.SOLVER.IMS_PER_BATCH = int(round(cfg.SOLVER.IMS_PER_BATCH * scale))
        lr = cfg.SOLVER.BASE_LR = cfg.SOLVER.BASE_LR * scale
        max_iter = cfg.SOLVER.MAX_ITER = int(round(cfg.SOLVER.MAX_ITER / scale))
        warmup_iter = cfg.SOLVER.WARMUP_ITERS = int(round(cfg.SOLVER.WARMUP_ITERS / scale))
        cfg.SOLVER.STEPS = tuple(int(round(s / scale)) for s in cfg.SOLVER.STEPS)
        cfg.TEST.EVAL_PERIOD = int(round(cfg.TEST.EVAL_PERIOD / scale))
        cfg.SOLVER.CHECKPOINT_PERIOD = int(round(cfg.SOLVER.CHECKPOINT_PERIOD / scale))
        cfg.SOLVER.REFERENCE_WORLD_SIZE = num_workers
        logger.info(
            "Auto-scaling the config to batch_size={}, learning_rate={}, max_iter={}, warmup={}.".format(
                bs, lr, max_iter, warmup_iter
            )
        )
        if str(cfg.SOLVER.get("OPTIMIZER", "SGD")).upper() == "ADAMW":
            logger.warning("Linear LR scaling is SGD's rule; AdamW learning rates may need a different scaling.")
        if frozen:
            cfg.freeze()
        return cfg
