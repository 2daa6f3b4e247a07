"""Atomic writes: the target appears whole or not at all, with the usual permissions."""
import os
import stat

import pytest

from memnet_engine.core.atomic import atomic_output, atomic_path


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.caffemodel"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(str(target)) as f:
            f.write(b"half")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.caffemodel"]


def test_success_replaces_with_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = tmp_path / "sub" / "plot.png"
        with atomic_path(str(target)) as tmp:
            assert tmp.endswith(".png") and os.path.dirname(tmp) == str(target.parent)
            open(tmp, "wb").write(b"new")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
