"""Reference VLA training pieces: losses, targets, row weights, EMA, drafter distillation, grounding."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edge.codec import ActionStats
from vla.drafter import Drafter, distill_loss, drafter_inputs, unrolled_passes
from vla.eval_draft import chain_accept_lengths, draft_chain
from vla.model import Verifier
from tests.unit.vla_common import CFG, batch


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


def test_six_unrolled_passes_compute_the_runtime_chain():
    """Teacher-forced on the chain's own tokens, the 6th unrolled pass drafts exactly what
    ``draft_chain`` drafts (the 1st pass, on the verifier's features, need not)."""
    torch.manual_seed(6)
    v, d = Verifier(CFG).eval(), Drafter(CFG).eval()
    img, prompt, _ = batch(5, seed=6)
    with torch.no_grad():
        logits, hidden, _, valid, x = v.prefill(img, prompt)
        t1 = logits[:, -1].argmax(-1)
        drafts = draft_chain(v, d, hidden, x, valid, t1)
        b = drafter_inputs(v, img, prompt, torch.cat([t1[:, None], drafts], dim=1))
        passes = [v.lm_head(p[:, b.T - 1 : b.T + 5]).argmax(-1) for p in unrolled_passes(d, b, b.feat, 6)]
    assert len(passes) == 6
    assert torch.equal(passes[-1], drafts)
    assert torch.equal(passes[0][:, 0], drafts[:, 0])  # token 2 reads only verifier features
    loss, stats = distill_loss(d, v, b, unroll=3)
    assert torch.isfinite(loss) and 0.0 <= stats["top1"] <= 1.0


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


def test_cold_cross_entropy_target_is_the_verifiers_greedy_token():
    """With a tiny ``p_temperature`` the cross-entropy term is the hard cross-entropy on the verifier's
    argmax (its greedy tokens a_2..a_7, teacher-forced); at 1 it is the soft one; 0 is refused."""
    torch.manual_seed(7)
    v = Verifier(CFG).eval()
    d = Drafter(CFG)
    img, prompt, _ = batch(4, seed=7)
    greedy = v.greedy_actions(img, prompt)
    b = drafter_inputs(v, img, prompt, greedy)
    with torch.no_grad():
        pred = next(unrolled_passes(d, b, b.feat, 1))[:, b.T - 1 : b.T + 5]
        v_loss = F.smooth_l1_loss(pred, b.feat[:, b.T : b.T + 6])
        logits = v.lm_head(pred)
        hard = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), greedy[:, 1:].reshape(-1))
        soft_p = v.lm_head(b.feat[:, b.T : b.T + 6]).softmax(-1)
        soft = -(soft_p * logits.log_softmax(-1)).sum(-1).mean()
        cold, _ = distill_loss(d, v, b, p_weight=1.0, p_temperature=1e-4)
        warm, _ = distill_loss(d, v, b, p_weight=1.0)
    assert torch.allclose(cold, v_loss + hard, atol=1e-4)
    assert torch.allclose(warm, v_loss + soft, atol=1e-5)
    assert abs(hard.item() - soft.item()) > 1e-3  # the two targets differ on this model
    with pytest.raises(ValueError, match="p_temperature"):
        distill_loss(d, v, b, p_temperature=0.0)


def test_widened_drafter_computes_the_same_function_and_then_trains_its_new_units():
    """``widen_state`` grows the layer's SwiGLU inner size without changing a single output; the new
    units get gradients once their zero ``down`` columns move; shrinking is refused."""
    from vla.drafter import drafter_config, widen_state

    torch.manual_seed(11)
    v = Verifier(CFG).eval()
    narrow = Drafter(CFG)
    with torch.no_grad():  # a drafter that is not at its init, so the check is not of zeros
        for p in narrow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    wide_ffn = CFG.ffn_dim * 2
    wide = Drafter(drafter_config(CFG, wide_ffn))
    wide.load_state_dict(widen_state(narrow.state_dict(), wide_ffn, torch.Generator().manual_seed(0)))
    img, prompt, _ = batch(3, seed=11)
    b = drafter_inputs(v, img, prompt, v.greedy_actions(img, prompt))
    with torch.no_grad():
        a = next(unrolled_passes(narrow, b, b.feat, 1))
        w = next(unrolled_passes(wide, b, b.feat, 1))
    assert torch.allclose(a, w, atol=1e-6)
    assert wide.layer.down.weight.shape[1] == wide_ffn and wide.layer.gate_up.weight[CFG.ffn_dim:wide_ffn].abs().sum() > 0
    loss, _ = distill_loss(wide, v, b, p_weight=1.0)
    loss.backward()
    assert wide.layer.down.weight.grad[:, CFG.ffn_dim:].abs().sum() > 0  # the new units can learn
    with pytest.raises(ValueError, match="ffn_dim >= the drafter's"):
        widen_state(wide.state_dict(), CFG.ffn_dim)
    with pytest.raises(ValueError, match="ffn_dim: expected >= 1"):
        drafter_config(CFG, 0)


def test_action_stats_come_from_a_manifest_or_a_calib_file(tmp_path):
    """``--action-stats`` keeps a fine-tuned verifier's bins: the statistics are read from an artifact
    manifest's ``codec.action`` or a calib file's ``action``; anything else is refused naming the file."""
    import json

    from vla.train_common import read_action_stats

    stats = ActionStats.from_actions(np.random.default_rng(0).normal(0, 0.01, (500, 7)))
    (tmp_path / "manifest.json").write_text(json.dumps({"codec": {"vocab_size": 384, "action": stats.to_json()}}))
    (tmp_path / "calib.json").write_text(json.dumps({"kind": "action_stats", "action": stats.to_json()}))
    (tmp_path / "other.json").write_text(json.dumps({"files": {}}))
    assert read_action_stats(tmp_path / "manifest.json") == stats
    assert read_action_stats(tmp_path / "calib.json") == stats
    with pytest.raises(ValueError, match=r"other\.json: expected a manifest with codec\.action"):
        read_action_stats(tmp_path / "other.json")
