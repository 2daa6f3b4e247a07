#!/usr/bin/env python3
"""Run from a checkout without installing: train a net (memnet-train); the code is memnet_engine/cli/train.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    from memnet_engine.cli.train import main  # noqa: E402
except KeyboardInterrupt:  # Ctrl-C while the modules load: one line, not an import traceback
    sys.exit("train.py: interrupted during start-up: nothing was trained")

if __name__ == "__main__":
    sys.exit(main())
