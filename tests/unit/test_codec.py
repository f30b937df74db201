"""OpenVLA action codec: round trip, clipping, bin edges, gripper, bad input."""

import json

import numpy as np
import pytest

from edge.codec import ActionCodec, ActionStats, CodecError

VOCAB = 32000


def make_codec(q01=-0.02, q99=0.02):
    stats = ActionStats(q01=(q01,) * 6 + (0.0,), q99=(q99,) * 6 + (1.0,), mask=(True,) * 6 + (False,))
    return ActionCodec(stats, VOCAB)


def test_token_range_and_bin_distance():
    c = make_codec()
    rng = np.random.default_rng(0)
    a = rng.uniform(-0.05, 0.05, size=(2000, 7))
    a[:, 6] = rng.integers(0, 2, 2000)
    t = c.encode(a)
    assert t.min() >= VOCAB - 256 and t.max() <= VOCAB - 1
    # |delta token| == |delta bin| (Spec-VLA's relaxed acceptance relies on it)
    assert np.array_equal(np.abs(t[1:] - t[:-1]), np.abs(c.token_to_bin(t[1:]) - c.token_to_bin(t[:-1])))


def test_round_trip_within_half_bin_inside_range():
    c = make_codec()
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.0199, 0.0199, size=(5000, 7))
    a[:, 6] = rng.integers(0, 2, 5000)
    d = c.decode(c.encode(a))
    half_bin = 0.5 * (2 / 255) * 0.5 * (0.04)  # half a bin in action units
    assert np.abs(d[:, :6] - a[:, :6]).max() <= half_bin * 1.001  # 1e-8 epsilon of OpenVLA's normaliser
    # re-encoding decoded actions is a fixed point for normalised dimensions (the gripper's
    # "open" decodes to the last bin centre 0.996, which re-encodes one bin lower, as in OpenVLA)
    assert np.array_equal(c.encode(d)[:, :6], c.encode(a)[:, :6])
    assert np.all(c.gripper_command(d[:, 6]) == np.where(a[:, 6] > 0.5, 1.0, -1.0))


def test_clipping_outside_quantiles():
    c = make_codec()
    t = c.encode(np.array([[10.0] * 6 + [1.0], [-10.0] * 6 + [0.0]]))
    assert np.all(t[0, :6] == VOCAB - 256)  # x~ = 1 -> last edge -> bin 256
    assert np.all(t[1, :6] == VOCAB - 1)  # x~ = -1 -> bin 1
    d = c.decode(t)
    assert np.allclose(d[0, :6], 0.5 * (c.bin_centers[-1] + 1) * 0.04 - 0.02)
    assert np.allclose(d[1, :6], 0.5 * (c.bin_centers[0] + 1) * 0.04 - 0.02)


def test_bin_edges_follow_digitize():
    c = make_codec(-1.0, 1.0)
    edges = c.bins
    # a value exactly on edge k (0-based) falls in bin k+1 (np.digitize, right=False)
    for k in (0, 1, 127, 128, 254):
        a = np.zeros(7)
        a[0] = edges[k] * (1 - 1e-12) if edges[k] > 0 else edges[k]
        b = c.token_to_bin(c.encode(a))[0]
        assert b in (k, k + 1)
    a = np.zeros(7)
    a[0] = 1.0  # OpenVLA's +1e-8 in the denominator puts x == q99 just below the last edge
    assert c.token_to_bin(c.encode(a))[0] == 255
    a[0] = 1.01
    assert c.token_to_bin(c.encode(a))[0] == 256
    a[0] = -1.0
    assert c.token_to_bin(c.encode(a))[0] == 1
    # token of bin 256 decodes through the last bin centre (idx clipped to 254)
    assert c.decode(np.full(7, VOCAB - 256))[0] == pytest.approx(c.bin_centers[254], abs=1e-9)


def test_gripper_not_normalized_and_binarized():
    c = make_codec(-0.5, 0.5)
    closed = c.decode(c.encode(np.array([0.0] * 6 + [0.0])))[6]
    opened = c.decode(c.encode(np.array([0.0] * 6 + [1.0])))[6]
    assert closed == pytest.approx(0.0, abs=1e-9)  # bin centre at 0 -> 2*0-1 = -1 = close
    assert opened == pytest.approx(c.bin_centers[-1])
    assert c.gripper_command([closed, opened]).tolist() == [-1.0, 1.0]
    # the gripper's quantiles are ignored: same tokens whatever q01/q99 say for it
    other = ActionCodec(ActionStats(q01=(-0.5,) * 7, q99=(0.5,) * 7, mask=(True,) * 6 + (False,)), VOCAB)
    assert np.array_equal(other.encode(np.array([0.0] * 6 + [1.0])), c.encode(np.array([0.0] * 6 + [1.0])))


def test_bad_input_errors(tmp_path):
    c = make_codec()
    with pytest.raises(CodecError, match="expected last dimension 7"):
        c.encode(np.zeros(6))
    with pytest.raises(CodecError, match="non-finite"):
        c.encode(np.array([np.nan] + [0.0] * 6))
    with pytest.raises(CodecError, match=r"expected action ids in \[31744, 31999\]"):
        c.decode(np.array([5] * 7))
    with pytest.raises(CodecError, match="q99: expected 7 values"):
        ActionStats(q01=(0.0,) * 7, q99=(1.0,) * 6, mask=(True,) * 7)
    with pytest.raises(CodecError, match="q99 < q01"):
        ActionStats(q01=(1.0,), q99=(0.0,), mask=(True,))
    p = tmp_path / "stats.json"
    p.write_text(json.dumps({"q01": [0.0], "q99": [1.0], "mask": [True], "q50": [0.5]}))
    with pytest.raises(CodecError, match=r"unknown field\(s\) \['q50'\]"):
        ActionStats.load(p)
    with pytest.raises(CodecError, match="not found"):
        ActionStats.load(tmp_path / "missing.json")


def test_stats_from_actions_and_json_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(10000, 7))
    s = ActionStats.from_actions(a)
    assert s.mask == (True,) * 6 + (False,)
    assert s.q01[0] == pytest.approx(np.quantile(a[:, 0], 0.01))
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"action": s.to_json()}))
    assert ActionStats.load(p) == s
