#!/usr/bin/env python3
"""Run from a checkout without installing: recompute BatchNorm statistics (memnet-precise-bn); the code is memnet_engine/cli/precise_bn.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memnet_engine.cli.precise_bn import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
