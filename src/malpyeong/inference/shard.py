"""Splitting one prediction run's work between processes (``accelerate launch --num_processes N``).

Every process plans the whole run exactly as a single process would (the same batches, the
same shared prefixes), and then runs only its share of the batches. Batches are never split or
regrouped, so every row is computed in the same batch as in a one-process run and the final
files are byte-identical to it. Batches that share an item (an item's options or option orders
in different batches) go to the same process, so each process finishes whole items.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from malpyeong.device import cuda_available


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes."""

    rank: int = 0
    world: int = 1

    @property
    def alone(self) -> bool:
        return self.world == 1

    def batches(self, items_of_batch: Sequence[Sequence[int]]) -> set[int]:
        """The batch indices this process runs, given the items each batch touches.

        Batches connected through a shared item form one group; groups go to the least
        loaded process, largest first (ties: the earlier group, the lower rank), so the
        assignment depends on the plan only.
        """
        n = len(items_of_batch)
        if self.alone:
            return set(range(n))
        parent = list(range(n))

        def find(b: int) -> int:
            while parent[b] != b:
                parent[b] = parent[parent[b]]
                b = parent[b]
            return b

        first_batch: dict[int, int] = {}
        for b, items in enumerate(items_of_batch):
            for i in items:
                if i in first_batch:
                    parent[find(b)] = find(first_batch[i])
                else:
                    first_batch[i] = b
        groups: dict[int, list[int]] = {}
        for b in range(n):
            groups.setdefault(find(b), []).append(b)
        load = [0] * self.world
        mine: set[int] = set()
        for members in sorted(groups.values(), key=lambda g: (-len(g), g[0])):
            rank = min(range(self.world), key=lambda r: (load[r], r))
            load[rank] += len(members)
            if rank == self.rank:
                mine.update(members)
        return mine


ALONE = Shard()  # one process does everything


def current_shard() -> Shard:
    """This process's shard: under a launcher (``WORLD_SIZE`` > 1, e.g. ``accelerate launch``)
    its rank among the processes, which join one process group here; else the only one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ALONE
    from accelerate import PartialState

    state = PartialState(cpu=not cuda_available())  # no GPU: a gloo group on the CPU
    return Shard(state.process_index, state.num_processes)


def barrier(shard: Shard) -> None:
    """Wait until every process of ``shard``'s run gets here (nothing to wait for alone)."""
    if not shard.alone:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


__all__ = ["ALONE", "Shard", "barrier", "current_shard"]
