"""bench.methods: method names -> decoder configurations, and clear errors for bad names."""

import pytest

from bench.methods import MethodFiles, method_config, spec_decoder
from edge.policy import DecoderConfig, PolicyConfig


def test_tree_and_chain_shapes_from_names():
    d = spec_decoder("tree-r5-k2-n12")
    assert (d.draft, d.threshold_bins, d.top_k, d.total_tokens, d.depth) == ("tree", 5, 2, 12, DecoderConfig().depth)
    assert spec_decoder("tree-r0-d4").depth == 4
    c = spec_decoder("chain-r3-l4")
    assert (c.draft, c.threshold_bins, c.chain_len) == ("chain", 3, 4)
    plain = method_config("tree-r9", PolicyConfig(), MethodFiles())
    assert plain.decoder == DecoderConfig(method="speculative", draft="tree", threshold_bins=9)
    assert plain.kinematic is None


@pytest.mark.parametrize("bad", ["tree-rx", "tree-r5-l4", "tree-r5-k2-k3", "chain-r5-n3", "tree-r5-k", "tree-r"])
def test_bad_shape_names_say_what_was_expected(bad):
    with pytest.raises(ValueError, match="expected (tree|chain)-rR"):
        method_config(bad, PolicyConfig(), MethodFiles())
