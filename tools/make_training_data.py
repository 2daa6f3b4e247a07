#!/usr/bin/env python3
"""Run from a checkout without installing: build a training set (memnet-make-data); the code is memnet_engine/cli/make_training_data.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memnet_engine.cli.make_training_data import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
