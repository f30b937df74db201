#!/usr/bin/env bash
# Install everything this project needs on a fresh Debian machine with Python 3.11:
# the Debian packages for headless rendering (EGL and OSMesa), pseudo-terminal tools and systemd-analyze,
# then the CPU build of PyTorch (first, so the host extras do not pull CUDA wheels),
# then this package with its sim, host and dev extras (editable).
# Usage: bash scripts/setup.sh [--no-apt]
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libegl1 libegl-mesa0 libgl1 libosmesa6 socat systemd)  # systemd: systemd-analyze verify of deploy/edge.service

if [[ "${1:-}" != "--no-apt" ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if (( ${#missing[@]} )); then
    SUDO=""
    [[ "$(id -u)" != 0 ]] && SUDO="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY="${PYTHON:-python3}"
"$PY" -m pip install -q --disable-pip-version-check "torch==2.13.0"
"$PY" -m pip install -q --disable-pip-version-check -e ".[sim,host,dev]"
echo "setup: done ($("$PY" -c 'import mujoco, onnxruntime, torch; print("mujoco", mujoco.__version__, "onnxruntime", onnxruntime.__version__, "torch", torch.__version__)'))"
