"""The SR demo weights shipped in the package: they load, restore/evaluate use them by default, they beat bicubic."""
import fnmatch
import os
import subprocess
import sys

import numpy as np
import pytest

import memnet_engine as me
from conftest import setup_argument
from memnet_engine.cli import evaluate
from memnet_engine.memnet.data.default import skimage_photo
from memnet_engine.memnet.imageops import read_image, write_image
from memnet_engine.weights import DEMO_MODELS, demo_model, model_and_weights
from memnet_engine.core.weights import read_caffemodel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_shipped_blob_fits_the_shipped_deploy_net():
    for task in DEMO_MODELS:
        model = demo_model(task)
        assert os.path.getsize(model.weights_path) < 4 << 20  # a few MB at most
        net = me.Net(model.deploy_path, me.TEST, weights=model.weights_path)
        saved = {layer.name: layer for layer in read_caffemodel(model.weights_path).layer if layer.blobs}
        assert set(saved) == set(net.params)  # nothing missing, nothing left over
        for name, blobs in net.params.items():
            for blob in blobs:
                assert np.all(np.isfinite(blob.data)), name
        batch_norms = [layer for layer in net.layers if layer.type == "BatchNorm"]
        assert batch_norms and all(layer.blobs[2].data[0] == 1 for layer in batch_norms)  # precise BN statistics


def test_shipped_files_are_package_data():
    """A non-editable install (a wheel) carries the demo files: setup.py's package_data names them."""
    patterns = setup_argument("package_data")["memnet_engine.weights"]
    for model in DEMO_MODELS.values():
        for name in (model.deploy, model.weights):
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name


def test_model_and_weights_choice():
    assert model_and_weights("sr", "a.prototxt", "b.caffemodel") == ("a.prototxt", "b.caffemodel", None)
    model, weights, note = model_and_weights("sr", None, None)
    assert (model, weights) == (DEMO_MODELS["sr"].deploy_path, DEMO_MODELS["sr"].weights_path)
    assert "shipped SR demo weights" in note
    with pytest.raises(me.MemnetError, match="both --model .* or neither"):
        model_and_weights("sr", "a.prototxt", None)
    with pytest.raises(me.MemnetError, match="no demo weights are shipped for task 'jpeg'"):
        model_and_weights("jpeg", None, None)


def test_restore_needs_no_weights_and_says_which_it_uses(tmp_path):
    write_image(str(tmp_path / "photo.png"), skimage_photo("chelsea")[100:140, 150:200])
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "restore.py"), "--task", "sr", "--scale", "3",
                           "--input", str(tmp_path / "photo.png"), "--output", str(tmp_path / "out.png")],
                          capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    assert "using the shipped SR demo weights" in done.stderr
    assert read_image(str(tmp_path / "out.png")).shape == (120, 150, 3)


def test_evaluate_with_the_demo_weights_beats_bicubic(tmp_path, capsys):
    """Held-out photos (not in the training set), cropped small so that this stays fast."""
    for name in ("chelsea", "coffee"):
        write_image(str(tmp_path / f"{name}.png"), skimage_photo(name)[60:180, 120:240])
    scores = {}
    for method in ("bicubic", "memnet"):
        assert evaluate.main(["--task", "sr", "--scale", "3", "--method", method, "--dataset", str(tmp_path)]) == 0
        scores[method] = float(capsys.readouterr().out.strip().splitlines()[-1].split(": ")[1].split(" dB")[0])
    assert scores["memnet"] > scores["bicubic"] + 0.3, scores


@pytest.mark.parametrize("basic", [False, True])
def test_bicubic_start_makes_a_memnet_the_identity(basic):
    from memnet_engine.core.weights import copy_weights
    from memnet_engine.memnet.models import MemNetConfig, memnet_deploy_net
    from memnet_engine.weights.start import bicubic_start

    me.set_random_seed(0)
    config = MemNetConfig(3, 1, 4, multi_supervised=not basic)
    net = me.Net(memnet_deploy_net(config, input_shape=(1, 1, 12, 12)), me.TEST)
    x = np.random.default_rng(0).random((1, 1, 12, 12)).astype(np.float32)
    assert np.abs(net.forward(data=x)["HR_recovery"] - x).max() > 0.1  # the release's init: far from the input
    expected = ["conv_end_03"] if basic else ["weight_output_end_01", "weight_output_end_02",
                                              "weight_output_end_03", "conv_end_01"]
    assert copy_weights(net, bicubic_start(3, 4, basic)) == expected
    np.testing.assert_allclose(net.forward(data=x)["HR_recovery"], x, rtol=1e-6, atol=1e-6)


def test_shipped_m6r6_start_is_the_generated_one():
    from google.protobuf import text_format
    from memnet_engine.weights.start import bicubic_start

    shipped = read_caffemodel(os.path.join(os.path.dirname(DEMO_MODELS["sr"].weights_path),
                                           "memnet_m6r6_bicubic_start.caffemodel"))
    assert text_format.MessageToString(shipped) == text_format.MessageToString(bicubic_start(6, 64))
