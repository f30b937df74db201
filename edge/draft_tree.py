"""EAGLE-2-style dynamic draft trees (METHODS.md 1.2): growth, masks and root-to-leaf paths.

A tree hangs under a root (the last token not yet in the verifier's cache). Nodes are stored in
creation order with ``parent`` (-1 = the root), ``depth`` (1 = child of the root), ``token`` and
``score`` (cumulative log-probability). ``grow_tree`` does EAGLE-2's expansion: top-k children
of the root; then ``depth - 1`` rounds in which every frontier node proposes its top-k and the
global top-k by cumulative score survive; finally the ``total_tokens`` best nodes overall are
kept (an ancestor always scores at least as high as its descendants, so the kept set is closed
under ancestry; ties are resolved to keep it closed).

``tree_mask(tree)`` is the ``[1 + N, 1 + N]`` boolean ancestor-or-self mask with the root at index
0, which is what the verify graph's ``tree_mask`` takes; ``paths(tree)`` lists the node indices
of every root-to-leaf path.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

__all__ = ["Tree", "grow_tree", "tree_mask", "paths", "log_softmax", "chain_tree", "add_branch"]


@dataclasses.dataclass
class Tree:
    token: np.ndarray  # [N] int64
    parent: np.ndarray  # [N] int64, -1 = root
    depth: np.ndarray  # [N] int64, >= 1
    score: np.ndarray  # [N] float64 cumulative log-probability

    def __len__(self) -> int:
        return len(self.token)


def log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _topk(v: np.ndarray, k: int) -> np.ndarray:
    k = min(k, v.shape[-1])
    idx = np.argpartition(-v, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(v, idx, -1), axis=-1, kind="stable")
    return np.take_along_axis(idx, order, -1)


def chain_tree(tokens: np.ndarray) -> Tree:
    """A chain as a tree (each node the child of the previous)."""
    n = len(tokens)
    return Tree(np.asarray(tokens, np.int64), np.arange(n) - 1, np.arange(1, n + 1), np.zeros(n))


def add_branch(tree: Tree, chain: np.ndarray) -> Tree:
    """``tree`` plus ``chain`` hung under the root, sharing any prefix already in the tree."""
    tok, par, dep, sc = list(tree.token), list(tree.parent), list(tree.depth), list(tree.score)
    node = -1
    for d, t in enumerate(np.asarray(chain, np.int64), 1):
        child = next((i for i in range(len(tok)) if par[i] == node and tok[i] == t), None)
        if child is None:
            tok.append(int(t)), par.append(node), dep.append(d), sc.append(-np.inf)
            child = len(tok) - 1
        node = child
    return Tree(np.asarray(tok, np.int64), np.asarray(par, np.int64), np.asarray(dep, np.int64),
                np.asarray(sc, np.float64))


def grow_tree(root_logp: np.ndarray, expand: Callable[[Tree, np.ndarray], np.ndarray], top_k: int,
              depth: int, total_tokens: int) -> Tree:
    """Grow a tree. ``expand(tree, frontier_idx) -> [F, V] log-probs`` of the next token after each
    frontier node (the drafter, run on the tree so far)."""
    first = _topk(root_logp, top_k)
    tree = Tree(first.astype(np.int64), np.full(len(first), -1), np.ones(len(first), np.int64),
                root_logp[first].astype(np.float64))
    frontier = np.arange(len(first))
    for d in range(2, depth + 1):
        lp = expand(tree, frontier)  # [F, V]
        cand = tree.score[frontier][:, None] + lp
        flat = _topk(cand.ravel(), top_k)
        par = frontier[flat // lp.shape[1]]
        tok = flat % lp.shape[1]
        start = len(tree)
        tree = Tree(np.concatenate([tree.token, tok]), np.concatenate([tree.parent, par]),
                    np.concatenate([tree.depth, np.full(len(tok), d)]),
                    np.concatenate([tree.score, cand.ravel()[flat]]))
        frontier = np.arange(start, len(tree))
    return _keep_best(tree, total_tokens)


def _keep_best(tree: Tree, n: int) -> Tree:
    if len(tree) <= n:
        return tree
    order = np.lexsort((tree.depth, -tree.score))  # best score first; shallower first on ties
    keep = np.zeros(len(tree), bool)
    for i in order:
        if keep.sum() >= n:
            break
        chain, j = [], i
        while j >= 0 and not keep[j]:
            chain.append(j)
            j = tree.parent[j]
        if keep.sum() + len(chain) <= n:
            keep[chain] = True
    idx = np.nonzero(keep)[0]  # creation order keeps parents before children
    remap = -np.ones(len(tree), np.int64)
    remap[idx] = np.arange(len(idx))
    parent = np.where(tree.parent[idx] >= 0, remap[np.maximum(tree.parent[idx], 0)], -1)
    return Tree(tree.token[idx], parent, tree.depth[idx], tree.score[idx])


def tree_mask(tree: Tree) -> np.ndarray:
    """``[1 + N, 1 + N]`` bool: row i may attend to column j iff j is i, an ancestor of i, or the root."""
    n = len(tree)
    m = np.zeros((n + 1, n + 1), bool)
    m[:, 0] = True
    for i in range(n):
        m[i + 1, i + 1] = True
        p = tree.parent[i]
        if p >= 0:
            m[i + 1] |= m[p + 1]
    return m


def paths(tree: Tree) -> list[np.ndarray]:
    """Node indices of each root-to-leaf path, leaves in creation order."""
    is_parent = np.zeros(len(tree), bool)
    is_parent[tree.parent[tree.parent >= 0]] = True
    out = []
    for leaf in np.nonzero(~is_parent)[0]:
        chain, j = [], leaf
        while j >= 0:
            chain.append(j)
            j = tree.parent[j]
        out.append(np.asarray(chain[::-1], np.int64))
    return out
