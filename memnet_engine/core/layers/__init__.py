"""Every layer type; importing this package registers them all."""
from . import (batch_norm, concat, convolution, eltwise, euclidean_loss, hdf5_data, input, relu,  # noqa: F401
               scale, split)
