"""Reference VLA: shapes, KV cache vs recomputation, padding, tokenizer, training, artifact."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge.codec import ActionCodec, ActionStats
from vla.artifact import ArtifactError, load_drafter, load_manifest, load_verifier, save_state, write_manifest
from vla.drafter import Drafter, distill_loss, drafter_inputs
from vla.eval_draft import chain_accept_lengths
from vla.model import VLAConfig, Verifier
from edge.tokenizer import Tokenizer

CFG = VLAConfig(d_model=64, n_layers=2, n_heads=4, ffn_dim=128, n_text=48)


def batch(B=3, P=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (B, CFG.n_views, 64, 64, 3), generator=g, dtype=torch.uint8)
    prompt = torch.randint(4, CFG.n_text, (B, P), generator=g)
    acts = torch.randint(CFG.n_text, CFG.vocab_size, (B, 7), generator=g)
    return img, prompt, acts


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


def test_tiny_training_lowers_loss():
    torch.manual_seed(3)
    m = Verifier(CFG)
    img, prompt, acts = batch(8, seed=3)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)

    def loss_fn():
        logits, _ = m.teacher_forced(img, prompt, acts)
        return F.cross_entropy(logits.reshape(-1, CFG.vocab_size), acts.reshape(-1))

    first = loss_fn().item()
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    assert loss_fn().item() < 0.5 * first


def test_ema_update_is_the_closed_form_average():
    """After n updates towards fixed weights w from e0: ema = w + (e0 - w) * decay^n; integer buffers copied."""
    from vla.train_common import ema_update

    m = torch.nn.BatchNorm1d(3)  # floating weights and an integer buffer (num_batches_tracked)
    ema = {k: v.detach().clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        m.weight.fill_(2.0)
        m.num_batches_tracked.fill_(7)
    for _ in range(10):
        ema_update(ema, m, 0.9)
    assert torch.allclose(ema["weight"], torch.full((3,), 2.0 + (1.0 - 2.0) * 0.9**10))
    assert int(ema["num_batches_tracked"]) == 7
    assert torch.equal(ema["bias"], m.bias.detach())  # unchanged weights stay put


def test_drafter_distillation_learns_and_chain_eval():
    torch.manual_seed(4)
    v = Verifier(CFG).eval()
    for p in v.parameters():
        p.requires_grad_(False)
    d = Drafter(CFG)
    img, prompt, _ = batch(6, seed=4)
    greedy = v.greedy_actions(img, prompt)
    b = drafter_inputs(v, img, prompt, greedy)
    opt = torch.optim.AdamW(d.parameters(), lr=3e-3)
    first, _ = distill_loss(d, v, b)
    for _ in range(60):
        opt.zero_grad()
        loss, stats = distill_loss(d, v, b)
        loss.backward()
        opt.step()
    assert loss.item() < first.item()
    d.eval()
    lens = chain_accept_lengths(v, d, img, prompt, r=0)
    assert lens.shape == (6,) and lens.min() >= 0 and lens.max() <= 6
    assert torch.all(chain_accept_lengths(v, d, img, prompt, r=10**6) == 6)


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
    load_drafter(tmp_path / "a")
    codec = ActionCodec(ActionStats.from_json(man["codec"]["action"]), man["codec"]["vocab_size"])
    assert codec.first_action_token == CFG.n_text


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


def test_early_step_weights():
    from vla.rows import sample_weights, steps_in_episode

    ep = torch.tensor([4, 4, 4, 4, 8, 8, 11])
    assert steps_in_episode(ep).tolist() == [0, 1, 2, 3, 0, 1, 0]
    assert sample_weights(ep, 2, 6.0).tolist() == [6, 6, 1, 1, 6, 6, 6]
    assert sample_weights(ep, 0, 6.0).tolist() == [1] * 7


def test_gripper_switch_weights_stay_inside_the_episode():
    """Rows around a change of the gripper token are up-weighted; a change across an episode
    boundary is not a switch, and the window does not leak into the neighbouring episode."""
    from vla.rows import near_switch, sample_weights

    ep = torch.tensor([1, 1, 1, 1, 1, 1, 2, 2, 2, 2])
    grip = torch.tensor([9, 9, 9, 5, 5, 5, 9, 9, 9, 9])  # switch at row 3; 5 -> 9 at row 6 is a new episode
    assert near_switch(ep, grip, 1).tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert near_switch(ep, grip, 4).tolist() == [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]
    assert near_switch(ep, grip, 0).tolist() == [0] * 10
    w = sample_weights(ep, 1, 2.0, near_switch(ep, grip, 1), 5.0)
    assert w.tolist() == [2, 1, 5, 5, 5, 1, 2, 1, 1, 1]


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


def test_gaussian_bin_targets_and_loss():
    from vla.losses import action_loss, gaussian_bin_targets

    V, n_bins = CFG.vocab_size, CFG.n_bins
    tok = torch.tensor([[V - 1, V - n_bins, V - 100]])
    t = gaussian_bin_targets(tok, V, n_bins, 3.0)
    assert torch.allclose(t.sum(-1), torch.ones(1, 3))
    assert t.argmax(-1).tolist() == tok.tolist()
    assert t[..., : V - n_bins].abs().sum() == 0  # no mass on text ids, even at the edge bin
    mid = t[0, 2]
    assert mid[V - 99] == mid[V - 101] and mid[V - 99] < mid[V - 100]  # symmetric, peaked
    assert torch.equal(gaussian_bin_targets(tok, V, n_bins, 0.0), F.one_hot(tok, V).float())
    # a prediction one bin off costs less than one 50 bins off (one-hot CE scores them alike)
    near = torch.full((1, 3, V), -20.0)
    far = near.clone()
    for i, k in enumerate(tok[0].tolist()):
        step = 1 if k < V - 1 else -1
        near[0, i, k + step] = 20.0
        far[0, i, k + 50 * step] = 20.0
    assert action_loss(near, tok, n_bins, 3.0) < action_loss(far, tok, n_bins, 3.0)
    assert torch.isclose(action_loss(near, tok, n_bins, 0.0), action_loss(far, tok, n_bins, 0.0))


def test_label_sigmas_keep_gripper_and_constant_dims_one_hot():
    from vla.losses import gaussian_bin_targets, label_sigmas

    stats = ActionStats(q01=(-0.02, -0.02, -0.02, 0.0, 0.0, -0.1, 0.0),
                        q99=(0.02, 0.02, 0.02, 0.0, 0.0, 0.1, 1.0),
                        mask=(True, True, True, True, True, True, False))
    sig = label_sigmas(stats, 4.0)
    assert sig.tolist() == [4.0, 4.0, 4.0, 0.0, 0.0, 4.0, 0.0]
    tok = torch.full((2, 7), CFG.vocab_size - 100)
    t = gaussian_bin_targets(tok, CFG.vocab_size, CFG.n_bins, sig)
    assert torch.equal(t[:, 6], F.one_hot(tok[:, 6], CFG.vocab_size).float())  # gripper: exact class
    assert torch.equal(t[:, 3], F.one_hot(tok[:, 3], CFG.vocab_size).float())  # constant dimension
    assert t[:, 0].max() < 0.2 and torch.allclose(t.sum(-1), torch.ones(2, 7))


def test_train_refuses_label_smoothing_with_gaussian_targets(capsys):
    """Gaussian bin targets replace label smoothing; asking for both would silently drop one."""
    from vla.train import main

    for extra, msg in ((["--label-smoothing", "0.1", "--label-sigma-bins", "4"], "expected one of them, got both"),
                       (["--label-sigma-bins", "-1"], "--label-sigma-bins: expected >= 0, got -1.0"),
                       (["--switch-steps", "-2"], "--switch-steps: expected >= 0, got -2"),
                       (["--switch-weight", "0"], "--switch-weight: expected > 0, got 0.0"),
                       (["--ema", "1"], "--ema: expected a decay in [0, 1), got 1.0")):
        with pytest.raises(SystemExit):
            main(["verifier", "--data", "nowhere", "--out", "nowhere", *extra])
        assert msg in capsys.readouterr().err


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


def test_stage_targets_follow_releases_and_aux_loss_skips_nan():
    from sim.tasks import get_task, stage_targets
    from vla.losses import stage_target_loss

    task = get_task("long", "red_then_green")
    g = np.array([1, 1, 0, 0, 1, 1, 0, 1, 1], np.float32)  # grasp, release, grasp, release
    t = stage_targets(task, 5, g)
    lay = task.layout(np.random.default_rng(5))
    red, green, plate = lay["blocks"]["red"][:2], lay["blocks"]["green"][:2], lay["plate"]
    np.testing.assert_allclose(t[:4], [[*red, *plate]] * 4, atol=1e-6)
    np.testing.assert_allclose(t[4:], [[*green, *plate]] * 5, atol=1e-6)  # capped at the last stage
    lift = stage_targets(get_task("goal", "lift_blue"), 5, np.zeros(3))
    np.testing.assert_allclose(lift[:, :2], lift[:, 2:])  # a lift's place is the block itself
    pred = torch.zeros(3, 4, requires_grad=True)
    target = torch.tensor([[0.5, 0.0, 0.5, 0.0], [float("nan")] * 4, [0.62, 0.22, 0.38, -0.22]])
    loss = stage_target_loss(pred, target)
    assert loss.item() == pytest.approx(F.smooth_l1_loss(torch.zeros(2, 4), torch.tensor([[0.0] * 4, [1.0, 1.0, -1.0, -1.0]]),
                                                         beta=0.1).item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert stage_target_loss(pred, torch.full((3, 4), float("nan"))).item() == 0.0


def test_grounding_pretraining_pieces(tmp_path):
    from vla.data import Samples
    from vla.rows import before_first_switch
    from vla.train_common import load_vision_init
    from vla.train_grounding import grounding_loss

    ep = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    grip = torch.tensor([9, 9, 8, 9, 8, 8, 9])  # episode 1 starts closed: only its change counts
    assert before_first_switch(ep, grip).tolist() == [True, True, False, False, True, True, False]

    torch.manual_seed(0)
    m = Verifier(dataclasses.replace(CFG, film=True, coord_channels=True))
    img, prompt, acts = batch(6, seed=1)
    aux = torch.tensor([[0.45, 0.1, 0.5, -0.1]] * 3 + [[0.6, -0.2, 0.4, 0.2]] * 3)
    s = Samples(img, prompt, torch.full((6,), prompt.shape[1]), acts, torch.arange(6) // 3, "x", aux)
    head = torch.nn.Sequential(torch.nn.Linear(CFG.n_visual * CFG.d_model, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    pick_ok = torch.tensor([True, False, False, True, True, True])
    idx = torch.arange(6)
    params = list(m.vision.parameters()) + list(m.embed.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    first, _ = grounding_loss(m, head, s, idx, pick_ok)
    for _ in range(40):
        loss, _ = grounding_loss(m, head, s, idx, pick_ok)
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < 0.5 * first.item()
    s.aux[1, :2] = float("nan")  # a row after the grasp: its block label is masked out, even a NaN one
    again, _ = grounding_loss(m, head, s, idx, pick_ok)
    assert again.item() == pytest.approx(grounding_loss(m, head, s, idx, pick_ok)[0].item())
    s.aux[0, :2] = 99.0  # a pick row: counts
    assert grounding_loss(m, head, s, idx, pick_ok)[0].item() > again.item() + 1.0

    torch.save({k: v for k, v in m.state_dict().items() if k.startswith(("vision.", "embed."))}, tmp_path / "g.pt")
    fresh = Verifier(dataclasses.replace(CFG, film=True, coord_channels=True))
    load_vision_init(fresh, tmp_path / "g.pt")
    assert torch.equal(fresh.vision.stem[0].weight, m.vision.stem[0].weight)
    assert not torch.equal(fresh.layers[0].qkv.weight, m.layers[0].qkv.weight)  # the decoder is untouched
    n = CFG.n_text
    assert torch.equal(fresh.embed.weight[:n], m.embed.weight[:n])  # the words come from grounding.pt
    assert not torch.equal(fresh.embed.weight[n:], m.embed.weight[n:])  # the action bins stay the model's own
    with pytest.raises(ValueError, match="vision.film.weight"):
        load_vision_init(Verifier(dataclasses.replace(CFG, film=False, coord_channels=True)), tmp_path / "g.pt")
