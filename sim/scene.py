"""The MuJoCo scene: a Franka Panda on a table with coloured blocks, a plate and two cameras.

The arm model is gymnasium-robotics' Franka Panda (``kitchen_franka/franka_assets``: MIT-licensed
package, model files Apache-2.0, originally github.com/vikashplus/franka), included by absolute
path from the installed package: no mesh is copied into this repository. The base of the arm is
the world origin; the table top is the plane z = 0. Blocks are 4 cm cubes (free bodies); blocks
a task does not use are parked under the table, out of every camera's view. The plate is a
mocap body (placed per episode). Cameras: ``front`` (fixed, third person) and ``wrist`` (on the
hand, looking along the fingers).

``build_model(image_size)`` compiles the model with rendering set up for speed on a CPU
(no shadows, no multisampling, offscreen buffer of the image size).
"""

from __future__ import annotations

import os
from pathlib import Path

BLOCKS = {  # name -> rgba
    "red": (0.85, 0.12, 0.1, 1),
    "green": (0.1, 0.7, 0.15, 1),
    "blue": (0.1, 0.25, 0.9, 1),
    "yellow_a": (0.95, 0.8, 0.1, 1),
    "yellow_b": (0.95, 0.8, 0.1, 1),
}
BLOCK_HALF_M = 0.02
PLATE_RADIUS_M = 0.065
PARK_Z_M = -0.55  # under the table top


def franka_assets_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gymnasium_robotics")  # located, not imported (its import prints)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the simulator needs gymnasium-robotics (Franka Panda model): pip install -e '.[sim]'")
    d = Path(list(spec.submodule_search_locations)[0]) / "envs" / "assets" / "kitchen_franka" / "franka_assets"
    if not (d / "chain.xml").is_file():
        raise FileNotFoundError(f"{d}/chain.xml: Franka model files not found in gymnasium-robotics")
    return d


def scene_xml() -> str:
    d = franka_assets_dir()
    blocks = []
    for i, (name, rgba) in enumerate(BLOCKS.items()):
        blocks.append(
            f'<body name="block_{name}" pos="{-0.3 - 0.1 * i} 0 {PARK_Z_M}"><freejoint name="block_{name}"/>'
            f'<geom name="block_{name}" type="box" size="{BLOCK_HALF_M} {BLOCK_HALF_M} {BLOCK_HALF_M}" '
            f'rgba="{" ".join(map(str, rgba))}" mass="0.05" friction="1.5 0.02 0.001" condim="4" '
            f'solref="0.01 1" group="1"/></body>')
    return f"""<mujoco model="vla_edge_panda">
  <include file="{d}/assets.xml"/>
  <compiler angle="radian" meshdir="{d}/meshes"/>
  <option timestep="0.002" cone="elliptic" impratio="5"/>
  <visual><global offwidth="64" offheight="64"/><quality shadowsize="0" offsamples="0"/></visual>
  <asset>
    <texture name="wood" type="2d" builtin="flat" rgb1="0.55 0.42 0.3" width="16" height="16"/>
    <material name="table" texture="wood" rgba="0.62 0.5 0.38 1"/>
  </asset>
  <worldbody>
    <light name="top" pos="0.5 0 1.6" dir="0 0 -1" diffuse="0.8 0.8 0.8" castshadow="false"/>
    <light name="side" pos="1.4 0.8 1.2" dir="-1 -0.6 -0.8" diffuse="0.4 0.4 0.4" castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.6" size="3 3 0.1" rgba="0.3 0.3 0.32 1"/>
    <geom name="table" type="box" pos="0.45 0 -0.025" size="0.5 0.55 0.025" material="table" friction="1 0.02 0.001"/>
    <camera name="front" pos="1.02 0 0.58" xyaxes="0 1 0 -0.62 0 0.55" fovy="44"/>
    <body name="panda_base" pos="0 0 0">
      <include file="{d}/chain.xml"/>
    </body>
    <body name="plate" mocap="true" pos="0.5 0 0.004">
      <geom name="plate" type="cylinder" size="{PLATE_RADIUS_M} 0.004" rgba="0.95 0.95 0.95 1" contype="1" conaffinity="1" friction="1 0.02 0.001"/>
    </body>
    {''.join(blocks)}
  </worldbody>
  <include file="{d}/actuator.xml"/>
</mujoco>"""


def set_gl_backend() -> str:
    """Pick a headless OpenGL backend before mujoco is imported (EGL, else OSMesa)."""
    backend = os.environ.setdefault("MUJOCO_GL", "egl")
    if backend == "egl" and not _has_lib("libEGL.so.1"):
        os.environ["MUJOCO_GL"] = backend = "osmesa"
    if backend == "osmesa":
        os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    return backend


def _has_lib(name: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(name)
        return True
    except OSError:
        return False


def build_model(image_size: int = 64):
    import mujoco

    model = mujoco.MjModel.from_xml_string(scene_xml())
    model.vis.global_.offwidth = max(image_size, 1)
    model.vis.global_.offheight = max(image_size, 1)
    return model


def make_renderer(model, image_size: int):
    """A ``mujoco.Renderer`` or an error naming the Debian package the backend needs."""
    import mujoco

    backend = os.environ.get("MUJOCO_GL", "egl")
    try:
        return mujoco.Renderer(model, image_size, image_size)
    except Exception as exc:  # mujoco raises RuntimeError/AttributeError/ImportError per backend
        pkg = {"egl": "libegl1 libegl-mesa0", "osmesa": "libosmesa6"}.get(backend, "libegl1 or libosmesa6")
        raise RuntimeError(
            f"headless rendering with MUJOCO_GL={backend} failed ({exc}); install the Debian package(s) "
            f"{pkg} (bash scripts/setup.sh does), or set MUJOCO_GL=osmesa/egl") from exc
