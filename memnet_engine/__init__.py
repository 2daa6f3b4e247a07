"""memnet-engine: a Caffe-compatible layer-graph engine for MemNet, on NumPy and CuPy."""
from .core.backend import to_numpy
from .core.blob import Blob
from .core.errors import MemnetError, NetError, PrototxtError, ReleasedBlobError, WeightsError
from .core.fillers import set_random_seed
from .core.layer import Layer, create_layer, layer_types, register
from .core.net import TEST, TRAIN, Net
from .core.profiler import profile
from .core.proto import caffe_pb2
from .core.solver import SGDSolver

__version__ = "0.1.0"

__all__ = ["Blob", "Layer", "MemnetError", "Net", "NetError", "PrototxtError", "ReleasedBlobError", "SGDSolver",
           "TEST", "TRAIN", "WeightsError", "caffe_pb2", "create_layer", "layer_types", "profile", "register",
           "set_random_seed",
           "to_numpy"]
