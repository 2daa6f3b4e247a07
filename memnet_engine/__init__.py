"""memnet-engine: a Caffe-compatible layer-graph engine for MemNet, on NumPy and CuPy."""
from .backend import to_numpy
from .blob import Blob
from .errors import MemnetError, NetError, PrototxtError, WeightsError
from .fillers import set_random_seed
from .layer import Layer, create_layer, layer_types, register
from .net import TEST, TRAIN, Net
from .proto import caffe_pb2
from .solver import SGDSolver

__version__ = "0.1.0"

__all__ = ["Blob", "Layer", "MemnetError", "Net", "NetError", "PrototxtError", "SGDSolver", "TEST", "TRAIN",
           "WeightsError", "caffe_pb2", "create_layer", "layer_types", "register", "set_random_seed", "to_numpy"]
