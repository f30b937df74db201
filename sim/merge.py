"""``python -m sim.merge --out DIR SRC [SRC ...]``: one dataset from several ``sim.collect`` outputs.

Episodes are renumbered consecutively in the order given (the first source keeps its indices when
they start at 0), each record keeps its fields and gains ``source`` (the source directory and its
original index); episode files are hard links where the file system allows (else copies), so a
merge costs no space. The sources must agree on image size and control rate; ``meta/info.json``
is the first source's with ``sources`` (each source's info) added.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from calib.dataset import DatasetError, read_episode_index

__all__ = ["merge"]


def merge(sources: list[str | Path], out: str | Path) -> int:
    out = Path(out)
    infos = []
    for src in sources:
        path = Path(src) / "meta" / "info.json"
        if not path.is_file():
            raise DatasetError(f"{path}: not found (is {src} a dataset written by `python -m sim.collect`?)")
        infos.append(json.loads(path.read_text()))
    for src, info in zip(sources[1:], infos[1:]):
        for key in ("image_size", "fps", "format_version"):
            if info.get(key) != infos[0].get(key):
                raise DatasetError(f"{src}/meta/info.json: field '{key}': expected {infos[0].get(key)!r} "
                                   f"(as {sources[0]}), got {info.get(key)!r}")
    if (out / "meta" / "episodes.jsonl").exists():
        raise DatasetError(f"{out}: already holds a dataset; choose a new --out")
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "meta").mkdir(exist_ok=True)
    records, n = [], 0
    for src in sources:
        for rec in read_episode_index(src):
            a = Path(src) / "data" / f"episode_{int(rec['index']):06d}.npz"
            b = out / "data" / f"episode_{n:06d}.npz"
            try:
                os.link(a, b)
            except OSError:
                shutil.copyfile(a, b)
            records.append({**rec, "index": n, "source": {"dir": str(src), "index": int(rec["index"])}})
            n += 1
    with open(out / "meta" / "episodes.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    info = dict(infos[0])
    info["sources"] = [{"dir": str(s), **i} for s, i in zip(sources, infos)]
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=1))
    return n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.merge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", help="dataset directories from `python -m sim.collect`")
    p.add_argument("--out", required=True, help="new dataset directory")
    args = p.parse_args(argv)
    try:
        n = merge(args.sources, args.out)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{n} episodes from {len(args.sources)} datasets -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
