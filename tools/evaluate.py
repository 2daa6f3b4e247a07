#!/usr/bin/env python3
"""Run from a checkout without installing: evaluate on a benchmark (memnet-evaluate); the code is memnet_engine/cli/evaluate.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from memnet_engine.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
