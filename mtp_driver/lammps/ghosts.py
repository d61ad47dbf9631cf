"""Forces on ghost copies, summed into the atoms they copy on the ranks that own them (LAMMPS does this for pair
styles, but its reverse communication runs before a fix's callback)."""

from __future__ import annotations

import numpy as np

from .library import World


class GhostFolding:
    """Where each ghost copy's original lives (rank, local index), for one set of ghosts: LAMMPS keeps its ghosts,
    in the same order, until it next builds neighbour lists. Atoms are matched by their IDs."""

    def __init__(self, world: World, owned_tags: np.ndarray, ghost_tags: np.ndarray):
        self.world = world
        self.owned, self.ghosts = len(owned_tags), len(ghost_tags)
        every_owned = world.gather_all(owned_tags)
        owners = np.zeros(max(int(tags.max(initial=0)) for tags in every_owned) + 1, dtype=np.int64)
        for rank, tags in enumerate(every_owned):
            owners[tags] = rank
        ghost_owner = owners[ghost_tags]  # every ghost copies an atom some rank owns
        self.send_order = np.argsort(ghost_owner, kind="stable")
        self.send_counts = np.bincount(ghost_owner, minlength=world.size)
        self.receive_counts = world.counts_to_receive(self.send_counts)
        received_tags = world.exchange(ghost_tags[self.send_order], self.send_counts, self.receive_counts)
        local_index = np.full(len(owners), -1, dtype=np.int64)
        local_index[owned_tags] = np.arange(len(owned_tags))
        self.receive_index = local_index[received_tags]

    def matches(self, owned: int, ghosts: int) -> bool:
        return (owned, ghosts) == (self.owned, self.ghosts)

    def fold(self, forces: np.ndarray) -> np.ndarray:
        """The owned atoms' forces (owned, 3): their own rows plus every rank's rows of their ghost copies."""
        received = self.world.exchange(forces[self.owned:][self.send_order], self.send_counts, self.receive_counts)
        folded = forces[:self.owned].copy()
        for axis in range(3):
            folded[:, axis] += np.bincount(self.receive_index, weights=received[:, axis], minlength=self.owned)
        return folded
