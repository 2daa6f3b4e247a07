"""Sizes from files are checked before allocating: a MemnetError naming the layer and the bytes, never MemoryError."""
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import memnet_engine as me
from conftest import REPO
from memnet_engine.core import memory
from memnet_engine.core.solver.step_status import StepStatus

CONV = ('layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param {{ '
        'num_output: {n} kernel_size: 3 weight_filler {{ type: "msra" }} }} }}')


def net_text(dims=(1, 1, 8, 8), num_output=4) -> str:
    shape = " ".join(f"dim: {d}" for d in dims)
    return (f'layer {{ name: "input" type: "Input" top: "data" input_param {{ shape {{ {shape} }} }} }}\n'
            + CONV.format(n=num_output))


def build(tmp_path, text):
    (tmp_path / "n.prototxt").write_text(text)
    return me.Net(str(tmp_path / "n.prototxt"), me.TEST)


@pytest.mark.parametrize("dims, num_output, message", [
    ((1, 1, 10**6, 10**6), 4, r"layer 'input' \(Input\): with its top blob of shape \(1, 1, 1000000, 1000000\) the "
                              r"net's blobs need 3.6 TiB \(4000000000000 bytes\), more than the"),
    ((1, 1, 8, 8), 4_000_000_000, r"layer 'conv': a parameter of shape \(4000000000, 1, 3, 3\) needs"),
    ((2**31, 2**31, 2**31, 4), 4, r"layer 'input' .* need 158456325028528675187087900672 bytes, more than a 64-bit "
                                  r"size can hold"),
])
def test_absurd_shapes_are_net_errors_naming_the_layer_and_the_bytes(tmp_path, dims, num_output, message):
    with pytest.raises(me.NetError, match=message) as error:
        build(tmp_path, net_text(dims, num_output))
    assert "bytes" in str(error.value)


def test_the_limit_is_the_machines_memory_or_the_address_space_limit():
    limit, what = memory.memory_limit()
    assert limit > 2**20 and ("RAM + swap" in what or "ulimit -v" in what)
    memory.require(limit, "as much as there is")
    with pytest.raises(me.MemnetError, match=rf"too much needs .*, more than the .* of {re.escape(what)}$"):
        memory.require(limit + 1, "too much")
    assert memory.shape_bytes((2**40, 2**40), 4) == 2**82  # exact: no int64 wrap-around


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc")
def test_under_an_address_space_limit_a_big_net_is_refused_not_a_memory_error(tmp_path):
    """A net needing ~4 GB in a process limited to 1.5 GB of address space (ulimit -v)."""
    (tmp_path / "n.prototxt").write_text(net_text((1, 64, 4000, 4000), 64))
    script = textwrap.dedent(f"""
        import resource
        import memnet_engine as me
        resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, resource.RLIM_INFINITY))
        try:
            me.Net({str(tmp_path / "n.prototxt")!r}, me.TEST)
        except me.NetError as ex:
            print("REFUSED", ex)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0 and "MemoryError" not in result.stderr, result.stderr
    assert "REFUSED" in result.stdout and "address space left under ulimit -v" in result.stdout, result.stdout


def test_a_reasonable_net_still_builds_and_runs(tmp_path):
    net = build(tmp_path, net_text((2, 1, 16, 16), 4))
    assert net.forward(data=np.ones((2, 1, 16, 16), np.float32))["conv"].shape == (2, 4, 14, 14)


def test_an_absurd_iter_size_is_refused_before_allocating_its_loss_slots(monkeypatch):
    monkeypatch.setattr(memory, "memory_limit", lambda device="cpu": (10**9, "memory of this machine (RAM + swap)"))
    with pytest.raises(me.MemnetError, match=r"iter_size 2147483649 \(a loss slot per pass\) needs 8\.0 GiB"):
        StepStatus("cpu", np.float32, 2**31 + 1)
