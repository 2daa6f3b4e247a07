"""tools/evaluate.py: the paper's protocol, known baseline values and the CLI contract."""
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from memnet_engine.cli import evaluate
from memnet_engine.memnet.imageops import write_image
from memnet_engine.memnet.scoring import protocol_scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "evaluate.py")
DATASETS = os.path.normpath(os.path.join(ROOT, "..", "shared", "datasets"))
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")



def run_json(capsys, *args):
    assert evaluate.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def dataset(name):
    path = os.path.join(DATASETS, name)
    if not os.path.isdir(path):
        pytest.skip(f"{path} is not available")
    return path


# MemNet Table 4 (bicubic rows, the VDSR/DRRN values) and the JPEG rows' PSNR of Table 5
@pytest.mark.parametrize("args,psnr,ssim", [
    (("--task", "sr", "--scale", "2", "--method", "bicubic"), 33.66, 0.9299),
    (("--task", "sr", "--scale", "3", "--method", "bicubic"), 30.39, 0.8682),
    (("--task", "sr", "--scale", "4", "--method", "bicubic"), 28.42, 0.8104),
])
def test_set5_bicubic_rows(capsys, args, psnr, ssim):
    result = run_json(capsys, *args, "--dataset", dataset("Set5"))
    assert round(result["psnr"], 2) == psnr and round(result["ssim"], 4) == ssim


@pytest.mark.parametrize("quality,psnr", [(10, 27.82), (20, 30.12)])
def test_classic5_jpeg_rows(capsys, quality, psnr):
    result = run_json(capsys, "--task", "jpeg", "--quality", str(quality), "--method", "jpeg",
                      "--dataset", dataset("Classic5"))
    assert round(result["psnr"], 2) == psnr and len(result["images"]) == 5


def test_protocol_scores_closed_forms():
    clean = np.random.default_rng(0).integers(0, 256, (40, 30)) / 255.0
    assert protocol_scores("sr", 3, clean, clean) == (math.inf, pytest.approx(1.0))
    psnr, _ = protocol_scores("jpeg", 10, clean, clean + 4 / 255)
    assert psnr == pytest.approx(20 * math.log10(255 / 4), abs=1e-4)
    # SR rounds to uint8 and shaves `scale` pixels: a change inside the border is not seen
    touched = clean.copy()
    touched[:3, :] = 0
    assert protocol_scores("sr", 3, clean, touched)[0] == math.inf


def _folder(tmp_path):
    rng = np.random.default_rng(4)
    write_image(str(tmp_path / "a.png"), rng.integers(0, 256, (64, 80, 3), dtype=np.uint8))
    write_image(str(tmp_path / "b.bmp"), np.full((60, 66), 120, np.uint8))
    return str(tmp_path)


def test_denoise_noisy_baseline_is_seeded(tmp_path, capsys):
    folder = _folder(tmp_path)
    first = run_json(capsys, "--task", "denoise", "--sigma", "25", "--method", "noisy", "--dataset", folder)
    again = run_json(capsys, "--task", "denoise", "--sigma", "25", "--method", "noisy", "--dataset", folder)
    other = run_json(capsys, "--task", "denoise", "--sigma", "25", "--method", "noisy", "--dataset", folder,
                     "--seed", "1")
    assert first == again and first["psnr"] != other["psnr"]
    assert first["psnr"] == pytest.approx(20 * math.log10(255 / 25), abs=0.15)  # unclipped noise
    assert [row["image"] for row in first["images"]] == ["a.png", "b.bmp"]


def test_memnet_method_and_json_last_line(tmp_path):
    folder = _folder(tmp_path)
    done = subprocess.run([sys.executable, TOOL, "--task", "sr", "--scale", "2", "--method", "memnet",
                           "--model", os.path.join(GOLDEN, "memnet_m2r2_c8_deploy.prototxt"),
                           "--weights", os.path.join(GOLDEN, "memnet_m2r2_c8_iter_4.caffemodel"),
                           "--dataset", folder, "--json", "--tile", "20"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("image") and any(line.startswith("a.png") for line in lines)
    result = json.loads(lines[-1])
    assert result["method"] == "memnet" and result["scale"] == 2 and len(result["images"]) == 2
    assert math.isfinite(result["psnr"]) and -1 <= result["ssim"] <= 1
    assert re.search(r"evaluated 2 images in \d+\.\d s on cpu", done.stderr) and "2/2" in done.stderr


def test_memnet_method_refuses_a_training_net(tmp_path, capsys):
    train_net = os.path.join(GOLDEN, "memnet_m2r2_c8_train.prototxt")
    assert evaluate.main(["--task", "sr", "--scale", "2", "--method", "memnet", "--model", train_net,
                          "--weights", os.path.join(GOLDEN, "memnet_m2r2_c8_iter_4.caffemodel"),
                          "--dataset", _folder(tmp_path)]) == 1
    assert f"--from-train {train_net}" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--task", "sr", "--method", "bicubic", "--dataset", str(tmp_path)])
    assert exit_info.value.code == 2 and "--scale" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--task", "sr", "--scale", "2", "--method", "noisy", "--dataset", str(tmp_path)])
    assert evaluate.main(["--task", "jpeg", "--quality", "10", "--method", "jpeg",
                          "--dataset", str(tmp_path / "none")]) == 1
    assert "does not exist" in capsys.readouterr().err
    write_image(str(tmp_path / "tiny.png"), np.zeros((2, 2), np.uint8))
    assert evaluate.main(["--task", "sr", "--scale", "4", "--method", "bicubic", "--dataset", str(tmp_path)]) == 1
    assert "tiny.png" in capsys.readouterr().err
