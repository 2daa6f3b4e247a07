#!/usr/bin/env python3
"""Run from a checkout without installing: convert weights (memnet-convert); the code is memnet_engine/cli/convert_weights.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memnet_engine.cli.convert_weights import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
