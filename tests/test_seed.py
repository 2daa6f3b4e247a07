"""--seed (Caffe's random_seed) makes a training run repeatable: weight fillers and data shuffling."""
from conftest import tiny_memnet_training_set

from memnet_engine.cli import train
from memnet_engine.cli.training_log import read_logged_losses


def run(folder, net, seed: int, name: str) -> tuple[list, bytes]:
    out = folder / name
    assert train.main([str(net), "--out", str(out), "--seed", str(seed), "--max-iter", "6", "--display", "1",
                       "--batch-size", "4", "--base-lr", "0.1", "--clip-gradients", "1", "--no-preview"]) == 0
    losses = read_logged_losses(str(out / "train.log"), before=6)
    return losses, (out / "MemNet_M2R1_8C4_iter_6.caffemodel").read_bytes()


def test_one_seed_repeats_the_run_and_another_differs(tmp_path):
    net = tiny_memnet_training_set(tmp_path)
    first, again, other = run(tmp_path, net, 5, "a"), run(tmp_path, net, 5, "b"), run(tmp_path, net, 6, "c")
    assert [i for i, _ in first[0]] == list(range(6))
    assert first == again  # identical losses and identical weights, bit for bit
    assert [loss for _, loss in first[0]] != [loss for _, loss in other[0]]
    assert first[1] != other[1]
