"""sim: the MuJoCo reference world (scene, tasks, experts, datasets, evaluation). Host only.

Importing ``sim`` picks the headless OpenGL backend (``MUJOCO_GL``: EGL, else OSMesa) before any
module imports mujoco, which reads it once at import.
"""

from sim.scene import set_gl_backend as _set_gl_backend

_set_gl_backend()
