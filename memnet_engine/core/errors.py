"""Errors the engine raises for bad user input; each message names the file, line or layer."""


class MemnetError(Exception):
    """Base class: a problem with what the user gave us (a file, a net, an option)."""


class PrototxtError(MemnetError):
    """A .prototxt file that cannot be read or parsed."""


class NetError(MemnetError):
    """A net definition that cannot be built (unknown type, missing bottom, bad shapes...)."""


class WeightsError(MemnetError):
    """A .caffemodel / .solverstate that cannot be read or does not fit the net."""


class NonFiniteWeights(WeightsError, UserWarning):
    """Weights holding NaN or infinite values: a warning naming the layers (an error with ``--strict``)."""


class ReleasedBlobError(MemnetError):
    """A blob array read after the net freed it (its memory plan keeps only what later layers need)."""
