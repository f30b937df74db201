"""Reference VLA model: shapes, KV cache vs recomputation, padding, tokenizer, artifact, grown encoders."""

import dataclasses
import json

import pytest
import torch

from edge.codec import ActionCodec, ActionStats
from vla.artifact import ArtifactError, load_drafter, load_manifest, load_verifier, save_state, write_manifest
from vla.drafter import Drafter, distill_loss, drafter_inputs
from vla.model import Verifier
from edge.tokenizer import Tokenizer
from tests.unit.vla_common import CFG, batch


def test_shapes():
    torch.manual_seed(0)
    m = Verifier(CFG).eval()
    img, prompt, acts = batch()
    logits, hidden = m.teacher_forced(img, prompt, acts)
    T = 1 + CFG.n_visual + prompt.shape[1] + 7
    assert logits.shape == (3, 7, CFG.vocab_size) and hidden.shape == (3, T, CFG.d_model)
    lg, h, kv, valid, x = m.prefill(img, prompt)
    assert kv.shape == (CFG.n_layers, 2, 3, CFG.n_heads, T - 7, CFG.head_dim)
    assert m.greedy_actions(img, prompt).shape == (3, 7)


def test_drafter_inputs_ignore_left_padding():
    """A left-padded prompt gives the drafter the same features, positions and loss inputs as the
    unpadded prompt the runtime sees (padding invisible)."""
    torch.manual_seed(5)
    v, d = Verifier(CFG).eval(), Drafter(CFG).eval()
    img, prompt, acts = batch(1, P=6, seed=5)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], dim=1)
    a, b = drafter_inputs(v, img, prompt, acts), drafter_inputs(v, img, padded, acts)
    assert b.T == a.T + 3 and b.feat.shape[1] == a.feat.shape[1] + 3  # the actions stay last
    assert torch.allclose(a.feat, b.feat[:, 3:], atol=1e-5)  # the 3 pad rows come first
    assert torch.equal(a.next_emb, b.next_emb[:, 3:])
    assert torch.equal(a.positions, b.positions[:, 3:]) and not b.key_valid[0, :3].any()
    la, _ = distill_loss(d, v, a)
    lb, _ = distill_loss(d, v, b)
    assert torch.allclose(la, lb, atol=1e-5)


def test_kv_cache_decoding_equals_full_recompute():
    torch.manual_seed(1)
    m = Verifier(CFG).eval()
    img, prompt, _ = batch(4)
    assert torch.equal(m.greedy_actions(img, prompt), m.full_recompute_greedy(img, prompt))
    # the logits too, not only the argmax: prefill(prefix)+extend(7) == one pass over prefix+7
    toks = m.greedy_actions(img, prompt)
    _, _, kv, valid, _ = m.prefill(img, prompt)
    ext, _, _ = m.extend(toks, kv, valid)
    full, _ = m.teacher_forced(img, prompt, toks)
    assert torch.allclose(ext[:, :-1], full[:, 1:], atol=1e-5)


def test_left_padding_is_invisible():
    torch.manual_seed(2)
    m = Verifier(CFG).eval()
    img, prompt, acts = batch(2)
    padded = torch.cat([torch.zeros(2, 4, dtype=torch.long), prompt], dim=1)
    a, _ = m.teacher_forced(img, prompt, acts)
    b, _ = m.teacher_forced(img, padded, acts)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.equal(m.greedy_actions(img, prompt), m.greedy_actions(img, padded))


def test_tokenizer_round_trip(tmp_path):
    instr = ["pick up the red block", "put the blue block on the plate", "push the green block to the left"]
    tok = Tokenizer.build(instr, n_text=64)
    for s in instr:
        assert " ".join(tok.decode(tok.encode(s))) == s
    assert tok.unknown_words("pick up the purple cube") == ["purple", "cube"]
    assert tok.encode("purple")[0] == 3  # <unk>
    p = tok.prompt_ids("pick up the red block")
    assert tok.decode(p)[:4] == ["in", ":", "what", "action"] and tok.decode(p)[-3:] == ["?", "out", ":"]
    tok.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    assert again.itos == tok.itos and again.prompt_ids("pick up the red block") == p
    with pytest.raises(ValueError, match="do not fit n_text=8"):
        Tokenizer.build(instr, n_text=8)


def make_artifact(root):
    torch.manual_seed(5)
    root.mkdir()
    m = Verifier(CFG)
    save_state(m, root / "verifier.pt")
    save_state(Drafter(CFG), root / "drafter.pt")
    Tokenizer.build(["pick up the red block"], CFG.n_text).save(root / "tokenizer.json")
    stats = ActionStats(q01=(-0.01,) * 6 + (0.0,), q99=(0.01,) * 6 + (1.0,), mask=(True,) * 6 + (False,))
    write_manifest(root, CFG, stats, {"data": {"sha256": "x"}})
    return m


def test_artifact_manifest_loads_and_matches(tmp_path):
    m = make_artifact(tmp_path / "a")
    man = load_manifest(tmp_path / "a")
    assert set(man["files"]) == {"verifier.pt", "drafter.pt", "tokenizer.json"}
    v, _ = load_verifier(tmp_path / "a")
    assert torch.allclose(v.lm_head.weight, m.lm_head.weight.half().float())
    assert load_drafter(tmp_path / "a").layer.down.weight.shape[1] == CFG.ffn_dim
    codec = ActionCodec(ActionStats.from_json(man["codec"]["action"]), man["codec"]["vocab_size"])
    assert codec.first_action_token == CFG.n_text


def test_artifact_drafter_has_the_manifests_inner_size(tmp_path):
    """A drafter with its own SwiGLU inner size (manifest ``drafter.ffn_dim``) loads at that size; a
    manifest that says otherwise than the file is refused naming drafter.pt."""
    from vla.drafter import drafter_config

    make_artifact(tmp_path / "a")
    wide = Drafter(drafter_config(CFG, 2 * CFG.ffn_dim))
    save_state(wide, tmp_path / "a" / "drafter.pt")
    stats = ActionStats(q01=(-0.01,) * 6 + (0.0,), q99=(0.01,) * 6 + (1.0,), mask=(True,) * 6 + (False,))
    write_manifest(tmp_path / "a", CFG, stats, {"drafter": {"ffn_dim": 2 * CFG.ffn_dim}})
    assert load_drafter(tmp_path / "a").layer.down.weight.shape[1] == 2 * CFG.ffn_dim
    write_manifest(tmp_path / "a", CFG, stats, {"drafter": {"ffn_dim": CFG.ffn_dim}})
    with pytest.raises(ArtifactError, match="drafter.pt"):
        load_drafter(tmp_path / "a")


def test_artifact_refuses_corruption(tmp_path):
    make_artifact(tmp_path / "a")
    p = tmp_path / "a" / "verifier.pt"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="verifier.pt: sha256 does not match"):
        load_manifest(tmp_path / "a")
    (tmp_path / "a" / "drafter.pt").unlink()
    with pytest.raises(ArtifactError, match="drafter.pt: listed in the manifest but missing"):
        load_manifest(tmp_path / "a", check_hashes=False)
    with pytest.raises(ArtifactError, match="manifest not found"):
        load_manifest(tmp_path / "nope")
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    man["codec"]["n_bins"] = 255
    man["files"].pop("drafter.pt")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ArtifactError, match="do not match the model's"):
        load_manifest(tmp_path / "a", check_hashes=False)


def grow_from_plain(**flags):
    """A plain verifier and one grown from its weights with the encoder options ``flags`` (``widen_inputs``);
    asserts that both give the same actions on random inputs, which are returned too."""
    import dataclasses
    from vla.train_common import widen_inputs

    torch.manual_seed(0)
    plain = Verifier(CFG).eval()
    grown = Verifier(dataclasses.replace(CFG, **flags)).eval()
    grown.load_state_dict(widen_inputs(plain.state_dict(), grown.state_dict()))
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (2, CFG.n_views, 64, 64, 3), generator=g, dtype=torch.uint8)
    prompt = torch.randint(4, CFG.n_text, (2, 5), generator=g)
    assert torch.equal(plain.greedy_actions(imgs, prompt), grown.greedy_actions(imgs, prompt))
    return plain, grown, imgs, prompt


def test_coord_channels_widen_from_a_plain_verifier():
    """A coordinate-channel encoder loaded from plain weights (zeros on the new inputs) computes the same
    actions, so a trained verifier can be continued with coordinates."""
    _, wide, _, _ = grow_from_plain(coord_channels=True)
    w = wide.vision.stem[0].weight
    assert w.shape[1] == 5 and torch.all(w[:, 3:] == 0)


def test_keypoints_grow_from_a_plain_verifier_and_see_position():
    """Keypoint projection starts at zero (same actions as the plain verifier it grew from); the keypoints
    themselves follow a bright spot moved inside one pooled cell."""
    plain, grown, _, _ = grow_from_plain(keypoints=True)
    enc = grown.vision
    with torch.no_grad():
        enc.kp_log_temp.fill_(3.0)
        enc.kp_proj.weight.copy_(torch.randn_like(enc.kp_proj.weight))
    a = torch.zeros(1, CFG.n_views, 64, 64, 3, dtype=torch.uint8)
    b = a.clone()
    a[:, :, 20:24, 18:22] = 255  # a spot in pooled cell (1, 1)
    b[:, :, 20:24, 26:30] = 255  # 8 px to the right, same cell
    with torch.no_grad():
        gap_plain = (plain.vision(a) - plain.vision(b)).abs().max().item()
        gap_grown = (enc(a) - enc(b)).abs().max().item()
    assert gap_grown > 10 * gap_plain


def test_film_grows_from_a_plain_verifier_and_conditions_vision_on_the_instruction():
    """FiLM starts as the identity (same actions as the verifier it grew from); once trained, the visual
    tokens of one image differ between instructions, and padding the prompt does not change them."""
    _, grown, imgs, prompt = grow_from_plain(film=True)
    with torch.no_grad():
        grown.vision.film.weight.copy_(torch.randn_like(grown.vision.film.weight) * 0.1)
        same_image = imgs[:1].expand(2, -1, -1, -1, -1)
        x = grown.prefix_embeds(same_image, prompt)[:, 1 : 1 + CFG.n_visual]
        assert (x[0] - x[1]).abs().max() > 0.1 * x.abs().max()  # two instructions, one image: other visual tokens
        padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), prompt], dim=1)  # left padding (PAD = 0)
        xp = grown.prefix_embeds(same_image, padded)[:, 1 : 1 + CFG.n_visual]
        assert torch.allclose(x, xp, atol=1e-7, rtol=1e-4)
        assert torch.equal(grown.greedy_actions(imgs, prompt), grown.greedy_actions(imgs, padded))


def test_state_tokens_bin_clip_and_round_trip(tmp_path):
    from edge.tokenizer import StateSpec

    spec = StateSpec(lo=(0.0, -1.0, 0.0, 0.0), hi=(1.0, 1.0, 0.5, 0.1), vocab_size=64 + 256, n_bins=256)
    tok = Tokenizer.build(["pick up the red block"], n_text=64, state=spec)
    obs = {"ee_pos": [0.0, 1.0, 0.25], "gripper": 7.0}  # x at lo, y at hi, z mid, gripper far above hi
    ids = tok.prompt_ids("pick up the red block", obs)
    assert ids[:4] == [319, 64, 319 - 128, 64]  # bins 0, 255, 128 (rounded), 255 (clipped); id = vocab - 1 - bin
    assert ids[4:] == tok.text_ids("pick up the red block")
    assert all(64 <= i < 320 for i in ids[:4])  # action-bin ids, never words
    with pytest.raises(ValueError, match=r"missing \['gripper'\]"):
        tok.prompt_ids("pick up the red block", {"ee_pos": [0, 0, 0]})
    with pytest.raises(ValueError, match="pass the observation"):
        tok.prompt_ids("pick up the red block")
    with pytest.raises(ValueError, match="must be finite"):
        spec.ids({"ee_pos": [0, float("nan"), 0], "gripper": 0.0})
    tok.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    assert again.state == spec and again.prompt_ids("pick up the red block", obs) == ids
    plain = Tokenizer.build(["pick up the red block"], n_text=64)
    assert plain.prompt_ids("pick up the red block", obs) == plain.text_ids("pick up the red block")
    with pytest.raises(ValueError, match="above the text ids"):
        Tokenizer.build(["x"], n_text=128, state=StateSpec(vocab_size=300, n_bins=256))


def test_film_ignores_state_tokens():
    torch.manual_seed(0)
    m = Verifier(dataclasses.replace(CFG, film=True)).eval()
    torch.nn.init.normal_(m.vision.film.weight, std=0.2)  # a trained FiLM, not the identity
    img, prompt, _ = batch(2, P=6)
    state = torch.randint(CFG.n_text, CFG.vocab_size, (2, 4))
    with torch.no_grad():
        a = m.prefix_embeds(img, prompt)
        b = m.prefix_embeds(img, torch.cat([state, prompt], 1))
        c = m.prefix_embeds(img, torch.cat([torch.full((2, 4), 5), prompt], 1))  # four more words
    nv = 1 + CFG.n_visual
    assert torch.equal(a[:, :nv], b[:, :nv])  # the visual tokens see the instruction's words only
    assert not torch.allclose(a[:, :nv], c[:, :nv])


def test_film_norm_reads_the_instruction_at_unit_scale_from_the_start():
    torch.manual_seed(0)
    m = Verifier(dataclasses.replace(CFG, film=True, film_norm=True)).eval()
    assert m.vision.film.weight.abs().max() > 0  # not the zeroed identity of plain FiLM
    img, prompt, _ = batch(2, P=6)
    other = prompt.clone()
    other[:, -1] = torch.where(prompt[:, -1] == 7, 8, 7)  # another last word
    nv = 1 + CFG.n_visual
    with torch.no_grad():
        a = m.prefix_embeds(img, prompt)[:, 1:nv]
        assert not torch.allclose(a, m.prefix_embeds(img, other)[:, 1:nv])  # the words already steer the stem
        text = m.instruction_embedding(prompt)
        assert torch.allclose(m.vision(img, 50.0 * text), m.vision(img, 200.0 * text), atol=1e-6)  # scale-free
        assert torch.allclose(m.vision(img, text), a, atol=1e-6)
    plain = Verifier(dataclasses.replace(CFG, film=True)).eval()
    assert plain.vision.film.weight.abs().max() == 0


def test_film_order_tells_apart_instructions_with_the_same_words():
    """The plain FiLM input is a bag of words: a prompt and its reversal give the stem the same input. With
    ``film_order`` they differ, left padding still changes nothing, and a verifier grown from a
    ``film_norm`` one (FiLM's new inputs zero) computes exactly what it did."""
    from vla.train_common import widen_inputs

    torch.manual_seed(0)
    base = Verifier(dataclasses.replace(CFG, film=True, film_norm=True)).eval()
    grown = Verifier(dataclasses.replace(CFG, film=True, film_norm=True, film_order=True)).eval()
    assert grown.vision.film.weight.shape[1] == 2 * base.vision.film.weight.shape[1]
    grown.load_state_dict(widen_inputs(base.state_dict(), grown.state_dict()))
    img, prompt, _ = batch(2, P=6)
    reordered = prompt.flip(1)  # the same words, the other way round
    nv = 1 + CFG.n_visual
    with torch.no_grad():
        assert torch.allclose(base.prefix_embeds(img, prompt)[:, :nv], base.prefix_embeds(img, reordered)[:, :nv],
                              atol=1e-6)  # bag of words
        assert torch.allclose(grown.prefix_embeds(img, prompt), base.prefix_embeds(img, prompt), atol=1e-6)
        assert torch.equal(grown.greedy_actions(img, prompt), base.greedy_actions(img, prompt))
        grown.vision.film.weight.normal_(0.0, 0.1)  # a trained FiLM reads the order half too
        a = grown.prefix_embeds(img, prompt)[:, 1:nv]
        assert not torch.allclose(a, grown.prefix_embeds(img, reordered)[:, 1:nv], atol=1e-3)
        padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), prompt], dim=1)  # left padding (PAD = 0)
        assert torch.allclose(a, grown.prefix_embeds(img, padded)[:, 1:nv], atol=1e-6)
        state = torch.randint(CFG.n_text, CFG.vocab_size, (2, 4))  # arm-state bin tokens take no word place
        assert torch.allclose(a, grown.prefix_embeds(img, torch.cat([state, prompt], 1))[:, 1:nv], atol=1e-6)
    assert grown.instruction_embedding(prompt).shape == (2, 2 * CFG.d_model)
