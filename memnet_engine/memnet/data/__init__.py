"""Training data for MemNet: the paper's corruptions, patches, augmentation and HDF5 output."""
from .builder import TrainingSetSpec, build_training_set
from .default import ensure_default_training_set
from .degradations import PAPER_LEVELS, TASKS, degrade, task_channel
from .patches import augmentations, extract_patches, patch_count
from .writer import PatchWriter

__all__ = ["PAPER_LEVELS", "PatchWriter", "TASKS", "TrainingSetSpec", "augmentations", "build_training_set",
           "degrade", "ensure_default_training_set", "extract_patches", "patch_count", "task_channel"]
