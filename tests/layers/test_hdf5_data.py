"""HDF5Data: batches in list order, wrap-around over files, shuffling, path resolution, errors."""
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
