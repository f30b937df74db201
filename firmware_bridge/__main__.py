"""``python -m firmware_bridge``: see ``python -m firmware_bridge.emulator --help``."""

import sys

from firmware_bridge.emulator_cli import main

if __name__ == "__main__":
    sys.exit(main())
