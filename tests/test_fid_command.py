"""python -m diffusion_lesson.fid: results on real digits, the reference cache, and clear refusals."""

import json
import re

import numpy as np
import pytest

from diffusion_lesson import metrics, models
from diffusion_lesson.cli import fid
from diffusion_lesson.data import DATA_ENV_VAR, data_root, load_mnist, to_uint8

pytestmark = pytest.mark.skipif(
    not (data_root() / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file(), reason=f"MNIST not under {DATA_ENV_VAR}"
)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one folder for the module: reference features computed once


@pytest.fixture
def cache(shared_cache, monkeypatch):
    monkeypatch.setenv(metrics.CACHE_ENV_VAR, str(shared_cache))
    return shared_cache


def write_digits(path, images):
    np.savez_compressed(path, images=images)
    return path


def test_reference_features_are_cached_outside_the_data_folder(cache, monkeypatch):
    first = models.course_feature_space().reference  # computed here (the first test of the module), read back below
    files = list(cache.rglob("*.npy"))
    assert first.shape == (10000, 128) and len(files) == 1
    assert data_root().resolve() not in files[0].resolve().parents

    def must_not_recompute(*args, **kwargs):
        raise AssertionError("reference features were recomputed instead of read from the cache")

    monkeypatch.setattr(metrics, "load_mnist", must_not_recompute)
    assert np.array_equal(models.course_feature_space().reference.numpy(), first.numpy())


def test_json_output_for_real_training_digits_is_near_the_floor(cache, tmp_path, capsys):
    images = to_uint8(load_mnist("train").images[:1000, 0]).numpy()
    path = write_digits(tmp_path / "real.npz", images)
    assert fid.main([str(path), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 1000 and "10000 digits" in result["reference"]
    noisy = np.clip(images.astype(int) + np.random.default_rng(0).integers(-80, 80, images.shape), 0, 255)
    assert fid.main([str(write_digits(tmp_path / "noisy.npz", noisy.astype(np.uint8))), "--json"]) == 0
    worse = json.loads(capsys.readouterr().out)
    assert 0 < result["fid"] < worse["fid"] and result["kid"] < worse["kid"]


def test_text_output_states_n_fid_and_kid(cache, tmp_path, capsys):
    images = to_uint8(load_mnist("test").images[:300, 0]).numpy()
    assert fid.main([str(write_digits(tmp_path / "x.npz", images))]) == 0
    out = capsys.readouterr().out
    assert "N = 300 digits" in out and "\nFID: " in out and "\nKID: " in out and " +- " in out


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((200, 1, 28, 28), np.uint8), "drop the channel axis"),
        (np.zeros((200, 32, 32), np.uint8), r"must be shaped \(N, 28, 28\)"),
        (np.zeros((200, 28, 28), np.float32), "must be uint8"),
        (np.zeros((50, 28, 28), np.uint8), "need at least 129 images, got 50"),
    ],
)
def test_bad_arrays_are_refused(tmp_path, capsys, images, message):
    with pytest.raises(SystemExit):
        fid.main([str(write_digits(tmp_path / "bad.npz", images))])
    assert re.search(message, capsys.readouterr().err)


def test_bad_files_are_refused(tmp_path, capsys):
    cases = {
        tmp_path / "missing.npz": "no file at",
        tmp_path / "text.npz": "not a readable .npz",
        tmp_path / "other.npz": "holds no 'images' array",
        tmp_path / "single.npy": "single .npy array",
    }
    (tmp_path / "text.npz").write_text("hello")
    np.savez(tmp_path / "other.npz", pictures=np.zeros(3))
    np.save(tmp_path / "single.npy", np.zeros((200, 28, 28), np.uint8))
    for path, message in cases.items():
        with pytest.raises(SystemExit):
            fid.main([str(path)])
        assert message in capsys.readouterr().err


def test_record_stores_the_result_in_the_manifest(cache, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "manifest.json"
    copy.write_text(models.MANIFEST_PATH.read_text())
    monkeypatch.setattr(models, "MANIFEST_PATH", copy)
    images = to_uint8(load_mnist("test").images[:300, 0]).numpy()
    path = write_digits(tmp_path / "x.npz", images)
    assert fid.main([str(path), "--record", "mnist-unet", "--label", "test digits"]) == 0
    stored = json.loads(copy.read_text())["mnist-unet"]["fid"]["test digits"]
    assert stored["n"] == 300 and stored["fid"] > 0 and "file" not in stored
    assert stored["classifier_sha256"] == models.manifest()["mnist-classifier"]["sha256"][:16]
    with pytest.raises(SystemExit):
        fid.main([str(path), "--record", "mnist-unet"])
    assert "--record and --label go together" in capsys.readouterr().err


def test_real_train_scores_training_digits(cache, capsys):
    assert fid.main(["--real-train", "300", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["file"] == "MNIST training digits" and result["n"] == 300 and result["fid"] > 0
    with pytest.raises(SystemExit):
        fid.main(["--real-train", "0"])
    assert "--real-train: must be a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fid.main(["--real-train", "60001"])
    assert "--real-train must be between 1 and 60000, got 60001" in capsys.readouterr().err
