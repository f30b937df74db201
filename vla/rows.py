"""Which dataset rows a training run uses and how often (PyTorch, host only).

Contract: pure functions of a ``vla.data.Samples`` or its ``episode [N]`` / gripper-token ``[N]`` columns
(rows of an episode are contiguous, in time order): the held-out split by episode index, seeded subsets,
each row's step within its episode, masks (near a gripper switch, before the first one) and sampling
weights.
"""

from __future__ import annotations

import torch

from vla.data import Samples


def split(samples: Samples, holdout_every: int) -> tuple[Samples, Samples]:
    held = samples.episode % holdout_every == 0
    return samples.subset(torch.nonzero(~held).squeeze(1)), samples.subset(torch.nonzero(held).squeeze(1))


def random_subset(s: Samples, n: int, seed: int) -> Samples:
    """At most ``n`` rows of ``s`` drawn without replacement (seeded), kept in their original order."""
    if n <= 0 or len(s) <= n:
        return s
    pick = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed))
    return s.subset(pick[:n].sort().values)


def steps_in_episode(episode: torch.Tensor) -> torch.Tensor:
    """Index of each row within its episode (rows of an episode are contiguous, in time order)."""
    n = episode.shape[0]
    start = torch.ones(n, dtype=torch.bool)
    start[1:] = episode[1:] != episode[:-1]
    first = torch.cummax(torch.where(start, torch.arange(n), torch.zeros(n, dtype=torch.long)), 0).values
    return torch.arange(n) - first


def near_switch(episode: torch.Tensor, gripper: torch.Tensor, steps: int) -> torch.Tensor:
    """Rows within ``steps`` rows (before or after) of a row whose ``gripper`` token differs from the
    previous row's in the same episode; a boolean mask (all False for ``steps <= 0``)."""
    n = episode.shape[0]
    mask = torch.zeros(n, dtype=torch.bool)
    if steps <= 0:
        return mask
    switch = torch.zeros(n, dtype=torch.bool)
    switch[1:] = (episode[1:] == episode[:-1]) & (gripper[1:] != gripper[:-1])
    at = torch.nonzero(switch).flatten()
    for off in range(-steps, steps + 1):
        j = at + off
        ok = (j >= 0) & (j < n)
        j, src = j[ok], at[ok]
        mask[j[episode[j] == episode[src]]] = True
    return mask


def before_first_switch(episode: torch.Tensor, gripper: torch.Tensor) -> torch.Tensor:
    """Rows before the first change of the ``gripper`` token within their episode (rows of an episode are
    contiguous, in time order): the block an episode picks first has not moved yet."""
    switch = torch.zeros(episode.shape[0], dtype=torch.long)
    switch[1:] = ((episode[1:] == episode[:-1]) & (gripper[1:] != gripper[:-1])).long()
    seen = switch.cumsum(0)
    at_start = torch.arange(episode.shape[0]) - steps_in_episode(episode)
    return seen - seen[at_start] == 0


def sample_weights(episode: torch.Tensor, early_steps: int, early_weight: float,
                   switch: torch.Tensor | None = None, switch_weight: float = 1.0) -> torch.Tensor:
    """Sampling weight per row: ``early_weight`` for the first ``early_steps`` steps of each
    episode, ``switch_weight`` on the rows of the mask ``switch`` (rows near a gripper switch,
    ``near_switch``), the larger where both apply, 1 elsewhere.

    The first frames (arm at home) are the only ones where the target's position in the image is
    the sole cue for the direction of motion; they are about 2% of the rows, and a policy that gets
    them wrong starts every episode heading the wrong way. The frames around a gripper switch are
    about as rare (a few per grasp or release) and a policy that misses them never closes."""
    w = torch.ones(episode.shape[0])
    if early_steps > 0:
        w[steps_in_episode(episode) < early_steps] = float(early_weight)
    if switch is not None:
        w[switch] = torch.maximum(w[switch], torch.tensor(float(switch_weight)))
    return w
