"""python -m diffusion_lesson.fid: results on real digits, the reference cache, and clear refusals."""

import json
import re

import numpy as np
import pytest

from diffusion_lesson import metrics, models
from diffusion_lesson.cli import fid, sample
from diffusion_lesson.cli.provenance import sampling_label
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


@pytest.fixture
def manifest_copy(tmp_path, monkeypatch):
    copy = tmp_path / "manifest.json"
    copy.write_text(models.MANIFEST_PATH.read_text())
    monkeypatch.setattr(models, "MANIFEST_PATH", copy)
    return copy


def shipped_samples(path, *flags):
    """130 digits (FID needs more than 128) from a shipped model in 2 DDIM steps: cheap, and really made by it."""
    args = ["--n", "130", "--seed", "0", "--steps", "2", "--out", str(path), "--device", "cpu", *flags]
    assert sample.main(args) == 0
    return path


def test_record_stores_the_result_under_a_label_read_from_the_samples_file(cache, tmp_path, manifest_copy, capsys):
    path = shipped_samples(tmp_path / "x.npz", "--clip-x0")
    capsys.readouterr()
    assert fid.main([str(path), "--record", "mnist-unet", "--class-mix"]) == 0
    label = "DDIM-2, eta 0, x0 clipped, seed 0, N 130"
    out = capsys.readouterr().out
    assert f"recorded in the manifest under mnist-unet: {label!r}" in out and "class mix (digits 0-9" in out
    stored = json.loads(manifest_copy.read_text())["mnist-unet"]["fid"][label]
    assert stored["n"] == 130 and stored["fid"] > 0 and not {"file", "class_mix"} & stored.keys()  # FID only
    assert stored["classifier_sha256"] == models.manifest()["mnist-classifier"]["sha256"][:16]
    assert stored["made_by"]["sha256"] == models.manifest()["mnist-unet"]["sha256"]


def test_record_refuses_digits_the_shipped_model_did_not_make(cache, tmp_path, manifest_copy, capsys):
    before = manifest_copy.read_text()
    real = write_digits(tmp_path / "real.npz", to_uint8(load_mnist("test").images[:300, 0]).numpy())
    pixel = shipped_samples(tmp_path / "pixel.npz")
    latent = shipped_samples(tmp_path / "latent.npz", "--model", "latent")
    with np.load(latent) as archive:
        made_by = json.loads(str(archive["made_by"])) | {"autoencoder_sha256": "0" * 64}
        np.savez_compressed(tmp_path / "other_ae.npz", images=archive["images"], made_by=json.dumps(made_by))
    np.savez(tmp_path / "odd.npz", images=np.load(pixel)["images"], made_by=json.dumps(["mnist-unet"]))
    capsys.readouterr()
    for flags, message in [
        ([str(tmp_path / "odd.npz"), "--record", "mnist-unet"], "'made_by' record is not one python -m"),
        ([str(real), "--record", "mnist-unet"], "does not say which model made its digits"),
        ([str(pixel), "--record", "mnist-latent-unet"], "was made by mnist-unet (sha256 "),
        ([str(pixel), "--record", "mnist-nothing"], "no shipped model named 'mnist-nothing'"),
        ([str(tmp_path / "other_ae.npz"), "--record", "mnist-latent-unet"], "decoded by another autoencoder"),
        (["--real-train", "300", "--record", "mnist-unet"], "record it with --record mnist-classifier"),
    ]:
        with pytest.raises(SystemExit):
            fid.main(flags)
        assert message in capsys.readouterr().err, flags
    assert manifest_copy.read_text() == before  # nothing was recorded
    assert fid.main([str(latent), "--record", "mnist-latent-unet"]) == 0  # the real pair is accepted
    assert "DDIM-2, eta 0, seed 0, N 130" in json.loads(manifest_copy.read_text())["mnist-latent-unet"]["fid"]


def test_the_real_floor_is_recorded_under_the_classifier(cache, manifest_copy):
    assert fid.main(["--real-train", "300", "--seed", "2", "--record", "mnist-classifier"]) == 0
    stored = json.loads(manifest_copy.read_text())["mnist-classifier"]["fid"]
    assert stored["real floor: training digits, seed 2, N 300"]["n"] == 300


@pytest.mark.parametrize(
    ("made_by", "label"),
    [
        ({"sampler": "ddim", "steps": 50, "eta": 0.0, "clip_x0": False}, "DDIM-50, eta 0, seed 0, N 1000"),
        ({"sampler": "ddim", "steps": 50, "eta": 1.0, "clip_x0": False}, "DDIM-50, eta 1, seed 0, N 1000"),
        ({"sampler": "ddim", "steps": 50, "eta": 0.0, "clip_x0": True}, "DDIM-50, eta 0, x0 clipped, seed 0, N 1000"),
        ({"sampler": "ddpm", "steps": 1000, "variance": "beta", "clip_x0": False}, "DDPM-1000, seed 0, N 1000"),
        ({"sampler": "ddpm", "steps": 1000, "variance": "posterior", "clip_x0": False},
         "DDPM-1000, variance posterior, seed 0, N 1000"),
        ({"sampler": "ddim", "steps": 20, "eta": 0.5, "clip_x0": False, "digit": 7, "prompt": None, "guidance": 2.0},
         "DDIM-20, eta 0.5, digit 7, guidance 2, seed 0, N 1000"),
        ({"sampler": "ddim", "steps": 50, "eta": 0.0, "clip_x0": False, "digit": None, "prompt": "a thick seven",
          "guidance": 3.0}, 'DDIM-50, eta 0, prompt "a thick seven", guidance 3, seed 0, N 1000'),
    ],
)  # fmt: skip
def test_sampling_labels_read_as_the_manifests(made_by, label):
    assert sampling_label(made_by | {"seed": 0, "n": 1000}) == label


def test_every_recorded_label_of_the_shipped_unets_is_one_the_samples_file_would_give():
    """The labels recorded before samples files said how they were made follow the same grammar."""
    pattern = re.compile(r"^(DDIM-\d+, eta [\d.]+|DDPM-\d+)(, x0 clipped)?, seed \d+, N \d+$")
    for name in ("mnist-unet", "mnist-latent-unet"):
        for label in models.manifest()[name].get("fid", {}):
            assert pattern.match(label), f"{name}: {label!r}"


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
