"""Tokenize once: the truncation counts come from the dataset trl's SFTTrainer trains on.

trl prepares a dataset in steps (chat template and tokenization, with assistant or completion masks;
labels; truncation to max_length; dropping examples left with no label; packing). `CountingSFTTrainer`
runs trl's own preparation in two calls: first with max_length unset and no packing (tokenization and
labels only, so every example's full length is known), then on that tokenized dataset with the real
settings (trl sees `input_ids` and `labels` and goes straight to truncation and packing). The lengths
are read from the Arrow column, not by tokenizing again. Masks and labels are trl's own, unchanged.

`dataset_num_proc`: datasets' multiprocessing for the tokenization, where the host has the cores for it
(4 or more usable) and the data is large enough to repay the worker start-up.
"""

from __future__ import annotations

import os
from typing import Optional

PARALLEL_ROWS = 20_000  # fewer rows tokenize faster in one process than they start workers
MAX_WORKERS = 8


def workers(rows: int) -> Optional[int]:
    """Processes for datasets.map: None (one) on small data or hosts with fewer than 4 cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if rows < PARALLEL_ROWS or cores < 4:
        return None
    return min(MAX_WORKERS, cores)


def lengths_over(dataset, limit: int) -> tuple[int, int]:
    """(examples, examples longer than `limit` tokens) from the tokenized dataset's input_ids column."""
    import pyarrow.compute as pc

    column = dataset.data.column("input_ids")
    lengths = pc.list_value_length(column)
    return len(dataset), int(pc.sum(pc.greater(lengths, limit)).as_py() or 0)


def counting_trainer():
    """SFTTrainer, with `token_counts[name] = (examples, truncated)` for each dataset it prepares."""
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        token_counts: dict

        def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
            if not hasattr(self, "token_counts"):
                self.token_counts = {}
            columns = getattr(dataset, "column_names", None) or []
            if args.max_length is not None and "input_ids" in columns:  # tokenized before (runtime/masks.py)
                self.token_counts[dataset_name] = lengths_over(dataset, args.max_length)
            if args.max_length is None or "input_ids" in columns:
                return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func,
                                                dataset_name)
            max_length = args.max_length
            args.max_length = None  # trl's tokenization and labels, nothing cut
            try:
                tokenized = super()._prepare_dataset(dataset, processing_class, args, False, formatting_func,
                                                     dataset_name)
            finally:
                args.max_length = max_length
            self.token_counts[dataset_name] = lengths_over(tokenized, max_length)
            # trl again, on its own tokens: truncation, dropping all-masked examples, packing
            return super()._prepare_dataset(tokenized, processing_class, args, packing, None, dataset_name)

    return CountingSFTTrainer
