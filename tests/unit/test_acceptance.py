"""Acceptance rules on hand-made cases, draft-tree construction, KV cache rollback."""

import numpy as np
import pytest

from edge.acceptance import AcceptRule, accept_length, best_path
from edge.draft_tree import Tree, chain_tree, grow_tree, paths, tree_mask
from edge.kv_cache import KVCache, KVCacheError


def test_exact_and_relaxed_per_position():
    y = [100, 200, 150, 90, 60, 70, 300]
    d = [100, 203, 150, 91, 60, 70, 300]
    assert accept_length(d, y, 0, AcceptRule()) == 1  # exact stops at 203 != 200
    assert accept_length(d, y, 0, AcceptRule.relaxed(3)) == 7
    assert accept_length(d, y, 0, AcceptRule.relaxed(2)) == 1
    # start_dim: the same drafts as dimensions 1.. use thresholds of those dimensions
    rule = AcceptRule(threshold_bins=(0, 5, 0, 0, 0, 0, 0), exact_gripper=True)
    assert accept_length([203, 150], [200, 150], 1, rule) == 2
    assert accept_length([203, 150], [200, 150], 2, rule) == 0


def test_exact_gripper_overrides_threshold():
    y = [10, 10, 10, 10, 10, 10, 50]
    d = [10, 10, 10, 10, 10, 10, 51]
    assert accept_length(d, y, 0, AcceptRule.relaxed(9, exact_gripper=True)) == 6
    assert accept_length(d, y, 0, AcceptRule.relaxed(9, exact_gripper=False)) == 7


def test_group_rule_heisd():
    rule = AcceptRule(mode="group")  # sum <= 30 and each <= 15 for xyz / rpy, gripper exact
    y = [100] * 7
    assert accept_length([110, 110, 110, 100, 100, 100, 100], y, 0, rule) == 7  # sum 30, max 10
    assert accept_length([111, 110, 110, 100, 100, 100, 100], y, 0, rule) == 0  # sum 31: xyz rejected
    assert accept_length([100, 100, 116, 100, 100, 100, 100], y, 0, rule) == 0  # one token 16 > 15
    assert accept_length([100, 100, 100, 115, 115, 100, 100], y, 0, rule) == 7  # rpy sum 30, max 15: at the bounds
    assert accept_length([100, 100, 100, 115, 115, 101, 100], y, 0, rule) == 3  # rpy sum 31: stops after xyz
    # a draft that starts mid-group (after a verified token 0) judges the rest of that group
    assert accept_length([105, 105, 100, 100, 100, 100], y[1:], 1, rule) == 6
    assert accept_length([100, 100, 100, 100, 100, 100, 101], y, 0, rule) == 6  # gripper exact


def test_best_path_ties_go_first():
    assert best_path([1, 3, 3, 0]) == 1
    assert best_path([0]) == 0


def test_tree_mask_and_paths():
    # root -> a(0), b(1); a -> c(2); c -> d(3)
    t = Tree(np.array([5, 6, 7, 8]), np.array([-1, -1, 0, 2]), np.array([1, 1, 2, 3]), np.zeros(4))
    m = tree_mask(t)
    assert m.shape == (5, 5)
    assert m[0].tolist() == [True, False, False, False, False]
    assert m[4].tolist() == [True, True, False, True, True]  # d sees root, a, c, itself
    assert m[2].tolist() == [True, False, True, False, False]  # b sees root, itself
    assert [p.tolist() for p in paths(t)] == [[1], [0, 2, 3]]
    c = chain_tree(np.array([1, 2, 3]))
    assert tree_mask(c)[1:, 1:].tolist() == np.tril(np.ones((3, 3), bool)).tolist()


def test_grow_tree_keeps_best_and_is_closed():
    V = 6
    rng = np.random.default_rng(0)
    table = np.log(rng.dirichlet(np.ones(V), size=64))

    def expand(tree, frontier):
        return table[(tree.token[frontier] * 7 + tree.depth[frontier]) % 64]

    root = np.log(np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05]))
    t = grow_tree(root, expand, top_k=3, depth=4, total_tokens=8)
    assert len(t) == 8
    assert set(t.token[t.depth == 1].tolist()) <= {0, 1, 2}
    for i in range(len(t)):  # closed under ancestry, parents come first, scores non-increasing
        p = t.parent[i]
        if p >= 0:
            assert p < i and t.depth[p] == t.depth[i] - 1 and t.score[p] >= t.score[i]
    full = grow_tree(root, expand, top_k=3, depth=4, total_tokens=100)
    assert len(full) == 3 * 4  # top-k frontier per depth
    kept = sorted(t.score.tolist(), reverse=True)
    assert kept == sorted(full.score.tolist(), reverse=True)[:8]


def test_kv_cache_append_gather_rollback():
    kv = KVCache(10, (2, 3))
    kv.append(np.ones((4, 2, 3)))
    new = np.arange(5 * 6, dtype=np.float32).reshape(5, 2, 3)
    kv.append(new, keep=[0, 2, 3])
    assert kv.n == 7
    assert np.array_equal(kv.view()[4:], new[[0, 2, 3]])
    assert kv.view().flags["C_CONTIGUOUS"]
    kv.rollback(5)
    assert kv.n == 5 and np.array_equal(kv.view()[4], new[0])
    with pytest.raises(KVCacheError, match="overflow"):
        kv.append(np.zeros((6, 2, 3)))
    with pytest.raises(KVCacheError, match="rollback to 6"):
        kv.rollback(6)
    with pytest.raises(KVCacheError, match=r"expected shape \[K, 2, 3\]"):
        kv.append(np.zeros((1, 3, 2)))


def test_add_branch_shares_prefixes_and_keeps_paths():
    from edge.draft_tree import add_branch, chain_tree, paths

    t = chain_tree(np.asarray([5, 6, 7]))
    t2 = add_branch(t, np.asarray([5, 6, 9, 10]))  # shares 5, 6 then forks
    assert len(t2) == 5 and list(t2.parent[3:]) == [1, 3] and list(t2.depth[3:]) == [3, 4]
    got = sorted(tuple(t2.token[p]) for p in paths(t2))
    assert got == [(5, 6, 7), (5, 6, 9, 10)]
    assert len(add_branch(t2, np.asarray([5, 6]))) == 5  # already there: nothing added
    t3 = add_branch(t2, np.asarray([8]))
    assert t3.parent[-1] == -1 and t3.depth[-1] == 1
