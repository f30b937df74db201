"""``python -m sim.render --data DIR --episode K --out FILE.gif|FILE.png``: look at an episode.

A ``.gif`` (or ``.mp4`` when imageio's ffmpeg plugin is installed) plays the front and wrist
cameras side by side; a ``.png`` is a strip of ``--frames`` evenly spaced frames.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def frames_of(data: Path, episode: int) -> np.ndarray:
    path = Path(data) / "data" / f"episode_{episode:06d}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such episode")
    with np.load(path) as z:
        views = [z["image"]] + ([z["wrist_image"]] if "wrist_image" in z.files else [])
    return np.concatenate(views, axis=2)  # [T, H, W * views, 3]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.render", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory (python -m sim.collect)")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--out", required=True, help="output .gif, .mp4 or .png")
    p.add_argument("--frames", type=int, default=8, help="frames in a PNG strip")
    p.add_argument("--scale", type=int, default=3, help="pixel upscaling")
    args = p.parse_args(argv)
    import imageio.v2 as imageio

    try:
        f = frames_of(Path(args.data), args.episode)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    f = np.kron(f, np.ones((1, args.scale, args.scale, 1), dtype=np.uint8))
    out = Path(args.out)
    if out.suffix == ".png":
        idx = np.linspace(0, len(f) - 1, args.frames).round().astype(int)
        imageio.imwrite(out, np.concatenate(list(f[idx]), axis=0))
    else:
        imageio.mimsave(out, list(f), duration=0.1) if out.suffix == ".gif" else imageio.mimsave(out, list(f), fps=10)
    print(f"wrote {out} ({len(f)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
