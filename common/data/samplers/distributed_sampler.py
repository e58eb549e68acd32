"""Index samplers for training and inference (``detectron2/data/samplers/distributed_sampler.py``).

Training samplers are infinite streams of dataset indices, identical on every rank (same shared
seed), with rank ``r`` of ``W`` taking elements ``r, r + W, r + 2W, ...`` so that ranks see
disjoint samples.
"""
from __future__ import annotations

import itertools
import logging
import math
from collections import defaultdict
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils.data.sampler import Sampler

from common.utils import comm

__all__ = ["TrainingSampler", "RepeatFactorTrainingSampler", "InferenceSampler"]

logger = logging.getLogger(__name__)


class TrainingSampler(Sampler):
    """Infinite stream of indices in ``[0, size)``: a fresh permutation per epoch when shuffling.

    Args:
        size: dataset length (> 0).
        shuffle: permute each epoch (else 0, 1, ..., size-1 repeated).
        seed: seed of the permutation generator; must be the same on all ranks. None draws one with
            :func:`common.utils.comm.shared_random_seed` (identical across ranks).

    The stream depends only on ``seed`` (a private ``torch.Generator``), not on the global RNG state.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None):
        if not isinstance(size, int):
            raise TypeError(f"TrainingSampler(size=) expects an int, got {type(size)}")
        if size <= 0:
            raise ValueError(f"TrainingSampler(size=) expects a positive int, got {size}")
        self._size = size
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)


class RepeatFactorTrainingSampler(Sampler):
    """Infinite sampler that repeats images by a per-image factor (LVIS repeat-factor sampling).

    Each epoch, image ``i`` appears ``floor(r_i)`` times plus once more with probability
    ``frac(r_i)`` (stochastic rounding), then the epoch is shuffled.

    Args:
        repeat_factors: ``(N,)`` float tensor of factors ``r_i >= 1``.
        shuffle, seed: as :class:`TrainingSampler`.
    """

    def __init__(self, repeat_factors: torch.Tensor, *, shuffle: bool = True, seed: Optional[int] = None):
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        repeat_factors = torch.as_tensor(repeat_factors, dtype=torch.float32)
        self._int_part = torch.trunc(repeat_factors)
        self._frac_part = repeat_factors - self._int_part

    @staticmethod
    def repeat_factors_from_category_frequency(dataset_dicts: List[dict], repeat_thresh: float) -> torch.Tensor:
        """Per-image factor ``max(1, max_c sqrt(t / f_c))`` over the categories c in the image.

        ``f_c`` = fraction of images containing category c; ``t`` = ``repeat_thresh``
        (``DATALOADER.REPEAT_THRESHOLD``). Images without annotations get 1.

        Returns:
            ``(len(dataset_dicts),)`` float32 tensor.
        """
        category_freq: Dict[int, float] = defaultdict(int)
        image_cats = []
        for dataset_dict in dataset_dicts:
            cat_ids = {ann["category_id"] for ann in dataset_dict["annotations"]}
            image_cats.append(cat_ids)
            for cat_id in cat_ids:
                category_freq[cat_id] += 1
        num_images = len(dataset_dicts)
        category_rep = {
            cat_id: max(1.0, math.sqrt(repeat_thresh / (count / num_images)))
            for cat_id, count in category_freq.items()
        }
        rep_factors = [max((category_rep[c] for c in cats), default=1.0) for cats in image_cats]
        return torch.tensor(rep_factors, dtype=torch.float32)

    def _get_epoch_indices(self, generator: torch.Generator) -> torch.Tensor:
        rands = torch.rand(len(self._frac_part), generator=generator)
        reps = (self._int_part + (rands < self._frac_part).float()).long()
        return torch.repeat_interleave(torch.arange(len(reps)), reps)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            indices = self._get_epoch_indices(g)
            if self._shuffle:
                indices = indices[torch.randperm(len(indices), generator=g)]
            yield from indices.tolist()


class InferenceSampler(Sampler):
    """Every index exactly once across ranks, in order: rank r gets a contiguous shard.

    Shard size is ``ceil(size / world_size)`` (the last rank may get fewer), as detectron2 v0.6.
    """

    def __init__(self, size: int):
        if size <= 0:
            raise ValueError(f"InferenceSampler(size=) expects a positive int, got {size}")
        self._size = size
        self._rank = comm.get_rank()
        self._world_size = comm.get_world_size()
        shard_size = (size - 1) // self._world_size + 1
        begin = min(shard_size * self._rank, size)
        end = min(shard_size * (self._rank + 1), size)
        self._local_indices = range(begin, end)

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)
