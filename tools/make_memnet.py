#!/usr/bin/env python3
"""Run from a checkout without installing: write MemNet prototxts (memnet-make-net); the code is memnet_engine/cli/make_memnet.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memnet_engine.cli.make_memnet import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
