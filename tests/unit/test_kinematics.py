"""Numpy kinematics: FK against MuJoCo, Jacobian against finite differences, IK across the workspace."""

import numpy as np
import pytest

from edge.kinematics import ArmChain, axis_angle, rot_error, rot_to_rpy, rpy_to_rot

CHAIN = ArmChain.load()
R_DOWN = axis_angle((1, 0, 0), np.pi)


def test_fk_matches_mujoco():
    mujoco = pytest.importorskip("mujoco")
    import sim  # noqa: F401  (headless GL backend before mujoco renders anything)
    from sim.scene import build_model

    m = build_model()
    d = mujoco.MjData(m)
    site = m.site("end_effector").id
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.uniform(CHAIN.lower, CHAIN.upper)
        d.qpos[:7] = q
        mujoco.mj_forward(m, d)
        p, R = CHAIN.fk(q)
        assert np.abs(p - d.site_xpos[site]).max() < 1e-6
        assert np.abs(R - d.site_xmat[site].reshape(3, 3)).max() < 1e-6


def test_jacobian_matches_finite_differences():
    rng = np.random.default_rng(1)
    q = rng.uniform(CHAIN.lower, CHAIN.upper)
    J = CHAIN.jacobian(q)
    eps = 1e-6
    p0, R0 = CHAIN.fk(q)
    for i in range(7):
        dq = np.zeros(7)
        dq[i] = eps
        p1, R1 = CHAIN.fk(q + dq)
        assert np.allclose((p1 - p0) / eps, J[:3, i], atol=1e-5)
        assert np.allclose(rot_error(R1, R0) / eps, J[3:, i], atol=1e-5)


def test_ik_reaches_targets_across_workspace():
    rng = np.random.default_rng(2)
    home = np.array([0.0, -0.184, 0.0, -2.497, 0.0, 0.743, 0.0])
    worst_p = worst_r = 0.0
    for _ in range(60):
        target = np.array([rng.uniform(0.3, 0.7), rng.uniform(-0.3, 0.3), rng.uniform(0.05, 0.35)])
        R = rpy_to_rot([0, 0, rng.uniform(-0.8, 0.8)]) @ R_DOWN
        q, info = CHAIN.ik(target, R, home, max_iters=200)
        assert np.all(q >= CHAIN.lower) and np.all(q <= CHAIN.upper)
        p, Rq = CHAIN.fk(q)
        worst_p = max(worst_p, np.linalg.norm(p - target))
        worst_r = max(worst_r, np.linalg.norm(rot_error(R, Rq)))
        assert info.converged
    assert worst_p < 1e-3 and worst_r < np.radians(1)


def test_ik_never_leaves_limits_for_unreachable_target():
    q, info = CHAIN.ik([2.0, 0, 0.2], R_DOWN, np.zeros(7), max_iters=50)
    assert not info.converged and info.pos_err_m > 0.5
    assert np.all(q >= CHAIN.lower) and np.all(q <= CHAIN.upper)


def test_rpy_round_trip():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rpy = rng.uniform([-3, -1.4, -3], [3, 1.4, 3])
        assert np.allclose(rot_to_rpy(rpy_to_rot(rpy)), rpy, atol=1e-9)


def test_bad_chain_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="arm chain description not found"):
        ArmChain.load(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("links:\n  - {pos: [0, 0, 0], quat: [1, 0, 0, 0], axis: [0, 0, 1]}\ntool: {pos: [0, 0, 0], quat: [1, 0, 0, 0]}\n")
    with pytest.raises(ValueError, match=r"links\[0\]: missing field 'range_rad'"):
        ArmChain.load(p)
