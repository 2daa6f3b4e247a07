"""HDF5Data: batches in list order, wrap-around over files, shuffling, path resolution, errors."""
import os

import h5py
import numpy as np
import pytest

import memnet_engine as me


def write_h5(path, first: int, rows: int) -> None:
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(first, first + rows, dtype=np.float32).reshape(rows, 1, 1, 1) * np.ones((1, 1, 2, 2))
        f["label"] = -np.arange(first, first + rows, dtype=np.float32).reshape(rows, 1)


def data_net(tmp_path, list_text: str, batch: int, shuffle: bool = False):
    (tmp_path / "list.txt").write_text(list_text)
    text = (f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ '
            f'source: "list.txt" batch_size: {batch} shuffle: {str(shuffle).lower()} }} }}')
    (tmp_path / "net.prototxt").write_text(text)
    return me.Net(str(tmp_path / "net.prototxt"), phase=me.TRAIN)


def test_batches_walk_the_files_in_order_and_wrap(tmp_path):
    write_h5(tmp_path / "a.h5", 0, 3)
    write_h5(tmp_path / "b.h5", 10, 2)
    net = data_net(tmp_path, "a.h5\n\nb.h5\n", batch=4)  # paths relative to the list file's folder
    assert net.blobs["data"].shape == (4, 1, 2, 2) and net.blobs["label"].shape == (4, 1)
    seen = []
    for _ in range(3):
        net.forward()
        seen.append(net.blobs["data"].data[:, 0, 0, 0].tolist())
        np.testing.assert_array_equal(net.blobs["label"].data[:, 0], -net.blobs["data"].data[:, 0, 0, 0])
    assert seen == [[0, 1, 2, 10], [11, 0, 1, 2], [10, 11, 0, 1]]


def test_shuffle_is_a_permutation_and_repeats_with_the_seed(tmp_path):
    write_h5(tmp_path / "a.h5", 0, 6)

    def epoch():
        me.set_random_seed(5)
        net = data_net(tmp_path, "a.h5\n", batch=6, shuffle=True)
        net.forward()
        return net.blobs["data"].data[:, 0, 0, 0].tolist()

    first = epoch()
    assert sorted(first) == list(range(6))
    assert first == epoch()


def test_missing_dataset_and_missing_list_are_clear(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.zeros((2, 1), np.float32)
    with pytest.raises(me.NetError, match=r"no dataset\(s\) \['label'\]"):
        data_net(tmp_path, "a.h5\n", batch=1)
    text = 'layer { name: "d" type: "HDF5Data" top: "data" hdf5_data_param { source: "nope.txt" batch_size: 1 } }'
    (tmp_path / "n.prototxt").write_text(text)
    with pytest.raises(me.NetError, match="HDF5 source list 'nope.txt' not found .*: make one with memnet-make-data"):
        me.Net(str(tmp_path / "n.prototxt"), phase=me.TRAIN)


def hdf5_net(tmp_path, source: str, batch: int = 1):
    text = (f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ '
            f'source: "{source}" batch_size: {batch} }} }}')
    (tmp_path / "net.prototxt").write_text(text)
    return me.Net(str(tmp_path / "net.prototxt"), phase=me.TRAIN)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_sources_must_be_regular_files(tmp_path):
    with pytest.raises(me.NetError, match="HDF5 source list '/dev/zero' is not a regular file"):
        hdf5_net(tmp_path, "/dev/zero")
    (tmp_path / "list.txt").write_text("/dev/zero\n")
    with pytest.raises(me.NetError, match=r"HDF5 file \(line 1 of \S+list.txt, not shown: not an .h5 name\) not a "
                                          "regular file"):
        hdf5_net(tmp_path, "list.txt")


def test_a_corrupt_h5_is_a_net_error_naming_it(tmp_path):
    write_h5(tmp_path / "a.h5", 0, 3)
    raw = (tmp_path / "a.h5").read_bytes()
    (tmp_path / "a.h5").write_bytes(raw[:len(raw) // 3])
    (tmp_path / "list.txt").write_text("a.h5\n")
    with pytest.raises(me.NetError, match=r"layer 'd': cannot read HDF5 file '\S+a.h5'"):
        hdf5_net(tmp_path, "list.txt")


def test_a_dataset_declaring_more_than_memory_is_refused_before_reading(tmp_path):
    with h5py.File(tmp_path / "big.h5", "w") as f:  # a few KB on disk: chunks are written when filled
        f.create_dataset("data", shape=(10**9, 1, 64, 64), dtype=np.float32, chunks=(1, 1, 64, 64))
        f.create_dataset("label", shape=(10**9, 1), dtype=np.float32, chunks=(1, 1))
    assert os.path.getsize(tmp_path / "big.h5") < 100_000
    (tmp_path / "list.txt").write_text("big.h5\n")
    with pytest.raises(me.NetError, match=r"layer 'd': reading '\S+big.h5' needs .*TiB \(16388000000000 bytes\), "
                                          r"more than the"):
        hdf5_net(tmp_path, "list.txt")


def test_a_list_that_is_not_a_list_of_h5_files_is_not_echoed(tmp_path):
    (tmp_path / "secrets.txt").write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(me.NetError) as error:
        hdf5_net(tmp_path, "secrets.txt")
    assert "root:x" not in str(error.value) and "not an .h5 name" in str(error.value)


def test_skipping_matches_reading_and_reads_no_data(tmp_path, monkeypatch):
    write_h5(tmp_path / "a.h5", 0, 3)
    write_h5(tmp_path / "b.h5", 10, 2)
    for shuffle in (False, True):
        me.set_random_seed(3)
        read = data_net(tmp_path, "a.h5\nb.h5\n", batch=2, shuffle=shuffle)
        for _ in range(7):
            read.forward()
        me.set_random_seed(3)
        skipped = data_net(tmp_path, "a.h5\nb.h5\n", batch=2, shuffle=shuffle)
        layer = skipped.layers[0]
        monkeypatch.setattr(layer, "_current_arrays", lambda: pytest.fail("skipping read data"))
        layer.skip_batches(6)
        monkeypatch.undo()
        skipped.forward()
        np.testing.assert_array_equal(skipped.blobs["data"].data, read.blobs["data"].data)
