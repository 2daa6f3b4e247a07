"""NCCL through the data-parallel Communicator on a real GPU (one rank: all-reduce and broadcast are
identities, which still runs CuPy's NCCL bindings, the unique id over MPI and the stream plumbing)."""
import numpy as np
import pytest

from memnet_engine.core.distributed import World
from memnet_engine.core.distributed.comm import Communicator


@pytest.mark.gpu
def test_one_rank_nccl_allreduce_and_broadcast():
    pytest.importorskip("mpi4py")
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
        from cupy.cuda import nccl  # noqa: F401
    except Exception as ex:  # no driver, or CuPy built without NCCL
        pytest.skip(f"CUDA/NCCL not available: {ex}")
    comm = Communicator(World(0, 1, 0), device="gpu")
    assert comm.nccl is not None
    values = cupy.arange(1000, dtype=cupy.float32)
    comm.allreduce_mean(values)
    comm.broadcast(values)
    cupy.cuda.get_current_stream().synchronize()
    np.testing.assert_array_equal(values.get(), np.arange(1000, dtype=np.float32))
