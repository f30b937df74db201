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


def test_variants_override_policy_fields_and_name_bad_keys(tmp_path):
    from bench.methods import parse_variants

    kerv, ret = tmp_path / "kerv.json", tmp_path / "ret.json"
    kerv.write_text("{}"), ret.write_text("{}")
    v = parse_variants(["full-group=full:kinematic.step.candidate_rule=group;kinematic.step.candidate_threshold_bins=null",
                        "spec-r2=specvla:decoder.threshold_bins=2"])
    files = MethodFiles(kerv=str(kerv), retrieval=str(ret), variants=v)
    full, group = method_config("full", PolicyConfig(), files), method_config("full-group", PolicyConfig(), files)
    heisd = method_config("heisd", PolicyConfig(), files)
    # the full stack checks its whole-action candidates exactly; HeiSD keeps the paper's group rule
    assert full.kinematic.step.candidate_rule == "token" and full.kinematic.step.candidate_threshold_bins == 0
    assert heisd.kinematic.step.candidate_rule == "group" and heisd.kinematic.step.candidate_threshold_bins is None
    assert group.kinematic.step.candidate_rule == "group" and group.kinematic.step.candidate_threshold_bins is None
    assert group.kinematic.step.kf_candidate and group.kinematic.use_retrieval  # the rest is the base method's
    assert method_config("spec-r2", PolicyConfig(), files).decoder.threshold_bins == 2
    with pytest.raises(ValueError, match="did you mean 'candidate_rule'"):
        method_config("x", PolicyConfig(), MethodFiles(kerv=str(kerv), retrieval=str(ret), variants=parse_variants(
            ["x=full:kinematic.step.candidate_rul=token"])))
    for bad in ["nobase", "x=full", "x=full:", "x=full:novalue", "full=full:decoder.threshold_bins=1"]:
        with pytest.raises(ValueError, match="--variant"):
            parse_variants([bad])
