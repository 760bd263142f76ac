import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgeresnet.data import (
    FASHION_MNIST_CLASSES,
    Preprocess,
    default_preprocess,
    load_split,
)
from edgeresnet.data.readers import read_idx, write_idx
from edgeresnet.errors import InputError

from ..conftest import DEBIAN, ROOT

PRE = Preprocess(channels=1, size=28, resize=28, mean=(0.2860,), std=(0.3530,))


def test_shipped_sets_are_real_fashion_mnist(calib_set, test_set):
    assert len(calib_set) == 1000 and len(test_set) == 10000
    assert calib_set.images.shape[1:] == (28, 28, 1)
    assert np.bincount(calib_set.labels).tolist() == [100] * 10
    assert test_set.classes == FASHION_MNIST_CLASSES


@pytest.mark.skipif(not DEBIAN.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_calibration_images_come_from_the_train_split(calib_set):
    train = load_split("fashion-mnist", "train")
    picked = np.loadtxt(ROOT / "calibration" / "calib-indices.txt", dtype=np.int64)
    assert np.array_equal(train.images[picked], calib_set.images)
    assert np.array_equal(train.labels[picked], calib_set.labels)
    assert (ROOT / "calibration" / "t10k-images-idx3-ubyte.gz").read_bytes() == \
        (DEBIAN / "t10k-images-idx3-ubyte.gz").read_bytes()


def test_fashion_mnist_spec_from_env_and_explicit_dir(tmp_path, monkeypatch, calib_set):
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte.gz", calib_set.images[:50, :, :, 0])
    write_idx(root / "train-labels-idx1-ubyte.gz", calib_set.labels[:50].astype(np.uint8))
    monkeypatch.setenv("EDGERESNET_DATA", str(tmp_path))
    via_env = load_split("fashion-mnist", "train")
    via_dir = load_split(f"fashion-mnist:{root}", "train")
    assert len(via_env) == len(via_dir) == 50
    assert np.array_equal(via_dir.images, calib_set.images[:50])
    with pytest.raises(InputError, match="no test split"):
        load_split(f"fashion-mnist:{root}", "test")


def test_idx_rejects_truncated_and_foreign_files(tmp_path):
    good = ROOT / "calibration" / "calib-labels-idx1-ubyte.gz"
    raw = gzip.decompress(good.read_bytes())
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-10]))
    (tmp_path / "junk").write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(InputError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    with pytest.raises(InputError, match="magic"):
        read_idx(tmp_path / "junk")


def _cifar_batch(images_rgb: np.ndarray, labels: np.ndarray) -> dict:
    data = images_rgb.transpose(0, 3, 1, 2).reshape(len(images_rgb), -1)
    return {b"batch_label": b"test", b"labels": labels.tolist(), b"data": data}


def test_cifar10_python_batches(tmp_path, calib_set):
    rgb = np.stack([np.asarray(Image.fromarray(im[:, :, 0]).convert("RGB").resize((32, 32))) for im in calib_set.images[:40]])
    for i in range(1, 3):
        with open(tmp_path / f"data_batch_{i}", "wb") as f:
            pickle.dump(_cifar_batch(rgb[(i - 1) * 15:i * 15], calib_set.labels[(i - 1) * 15:i * 15]), f, protocol=2)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(_cifar_batch(rgb[30:], calib_set.labels[30:40]), f, protocol=2)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in FASHION_MNIST_CLASSES]}, f, protocol=2)
    train, test = load_split(f"cifar10:{tmp_path}", "train"), load_split(f"cifar10:{tmp_path}", "test")
    assert len(train) == 30 and len(test) == 10
    assert np.array_equal(train.images[0], rgb[0])
    assert train.classes == FASHION_MNIST_CLASSES
    assert train.batch(np.arange(4), Preprocess(3, 32, 32, (0.5,) * 3, (0.5,) * 3)).shape == (4, 3, 32, 32)


class _Exploit:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/edgeresnet-pwned",))


def test_cifar_batch_that_runs_code_is_refused(tmp_path):
    Path("/tmp/edgeresnet-pwned").unlink(missing_ok=True)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Exploit(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(InputError, match="only numpy arrays"):
        load_split(f"cifar10:{tmp_path}", "test")
    assert not Path("/tmp/edgeresnet-pwned").exists()


def test_npz_spec(tmp_path, calib_set):
    np.savez(tmp_path / "d.npz", x_train=calib_set.images[:20, :, :, 0], y_train=calib_set.labels[:20],
             x_test=calib_set.images[20:30, :, :, 0], y_test=calib_set.labels[20:30],
             class_names=np.array(FASHION_MNIST_CLASSES))
    train, test = load_split(f"npz:{tmp_path / 'd.npz'}", "train"), load_split(f"npz:{tmp_path / 'd.npz'}", "test")
    assert (len(train), len(test)) == (20, 10)
    assert train.classes == FASHION_MNIST_CLASSES
    np.testing.assert_array_equal(train.batch(np.arange(3), PRE), calib_set.batch(np.arange(3), PRE))


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (im, lab) in enumerate(zip(images, labels)):
        d = root / FASHION_MNIST_CLASSES[lab].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[:, :, 0]).save(d / f"{i}.png")


def test_imagefolder_with_splits_matches_array_path(tmp_path, calib_set):
    _write_folder(tmp_path / "train", calib_set.images[:30], calib_set.labels[:30])
    _write_folder(tmp_path / "val", calib_set.images[30:40], calib_set.labels[30:40])
    train, test = load_split(str(tmp_path), "train"), load_split(str(tmp_path), "test")  # test falls back to val/
    assert len(train) == 30 and len(test) == 10
    first = int(np.flatnonzero(train.labels == train.labels[0])[0])
    x = train.batch(np.array([first]), PRE)
    assert x.shape == (1, 1, 28, 28)
    # Gray PNGs decode to exactly the IDX pixels.
    originals = {tuple(calib_set.images[i].ravel()) for i in range(30)}
    assert tuple(train.uint8(np.array([0]), PRE)[0].ravel()) in originals


def test_imagefolder_mixed_modes_and_sizes(tmp_path, real_images):
    for i, mode in enumerate(["L", "RGB", "RGBA", "P", "I;16"]):
        d = tmp_path / f"c{i % 2}"
        d.mkdir(exist_ok=True)
        base = Image.fromarray(real_images[i]).resize((40 + 7 * i, 33 + 3 * i))
        im = base.convert(mode) if mode != "I;16" else Image.fromarray((np.asarray(base).astype(np.uint16) * 257))
        im.save(d / f"{i}.png")
    data = load_split(str(tmp_path), "test")
    rgb = Preprocess(channels=3, size=24, resize=28, mean=(0.5,) * 3, std=(0.25,) * 3)
    x = data.batch(np.arange(len(data)), rgb)
    assert x.shape == (5, 3, 24, 24) and np.isfinite(x).all()
    assert x.max() > 1.0  # bright pixels survived every mode (16-bit rescaled, not clipped to black)


def test_preprocess_geometry_and_roundtrip():
    pre = Preprocess(channels=3, size=4, resize=6, mean=(0.0,) * 3, std=(1.0,) * 3)
    assert Preprocess.from_dict(pre.to_dict()) == pre
    wide = np.zeros((6, 12, 3), np.uint8)
    wide[:, 5:7] = 255  # a bright band in the middle: the 4-px center crop keeps columns 4..7
    out = pre(Image.fromarray(wide))
    assert out.shape == (3, 4, 4)
    assert out[:, :, 1:3].min() > 0.99 and out[:, :, [0, 3]].max() < 0.01
    big = pre(Image.fromarray(np.kron(wide, np.ones((4, 4, 1), np.uint8))))  # 48x24: resized to 12x6 first
    assert big.shape == (3, 4, 4) and big[:, :, 1:3].min() > 0.8 and big[:, :, [0, 3]].max() < 0.2


def test_default_preprocess_measures_fashion_mnist_stats(calib_set):
    pre = default_preprocess(calib_set)
    assert pre.channels == 1 and pre.size == 28
    assert abs(pre.mean[0] - 0.286) < 0.02 and abs(pre.std[0] - 0.353) < 0.02


@pytest.mark.parametrize("spec,match", [
    ("nonsense", "unknown data spec"), ("cifar10", "needs a directory"), ("npz:/no/such.npz", "no such file"),
    ("default", None),
])
def test_bad_specs_name_the_problem(spec, match, tmp_path):
    if match is None:
        with pytest.raises(InputError, match="splits"):
            load_split(spec, "holdout")
    else:
        with pytest.raises(InputError, match=match):
            load_split(spec, "train")


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "cls").mkdir()
    with pytest.raises(InputError, match="no images"):
        load_split(str(tmp_path), "train")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_any_spec_string_gives_a_set_or_an_input_error(spec):
    from edgeresnet.data.sources import user_path

    assume(not user_path(spec).exists())  # a real directory would be scanned as ImageFolder
    try:
        data = load_split(spec, "test")
    except InputError as exc:  # one line that names what was given
        assert exc.message.strip() and "\n" not in exc.message
        assert spec in exc.message or repr(spec) in exc.message
    else:
        assert len(data.images) == len(data.labels) > 0 and data.classes


def test_calibration_readme_checksums_match_the_files():
    import hashlib
    import re

    text = (ROOT / "calibration" / "README.md").read_text()
    listed = dict(re.findall(r"\| `([\w.-]+\.gz)` \|.*\| `([0-9a-f]{64})` \|", text))
    assert len(listed) == 4
    for name, digest in listed.items():
        assert hashlib.sha256((ROOT / "calibration" / name).read_bytes()).hexdigest() == digest, name


def test_preprocessing_flags_override_the_recorded_spec(tmp_path):
    from edgeresnet.cli.common import preprocess_overrides
    from edgeresnet.errors import InputError, UsageError

    base = Preprocess(1, 28, 28, (0.5,), (0.5,))
    (tmp_path / "p.json").write_text('{"size": 32, "resize": 36, "interpolation": "bicubic", "std": [0.4]}')
    fields = preprocess_overrides("0.2", "0.3", None, None, None, tmp_path / "p.json")
    pre = base.with_overrides(fields, channels=1)
    assert (pre.mean, pre.std, pre.size, pre.resize, pre.interpolation) == ((0.2,), (0.3,), 32, 36, "bicubic")
    assert fields.to_dict() == {"size": 32, "resize": 36, "interpolation": "bicubic", "std": [0.3], "mean": [0.2]}
    assert base.with_overrides(preprocess_overrides(None, None, None, None, None)) is base
    with pytest.raises(UsageError, match="comma-separated list of numbers"):
        preprocess_overrides("a,b", None, None, None, None)
    (tmp_path / "g.json").write_text('{"gamma": 2}')
    with pytest.raises(InputError, match='"gamma" is not a preprocessing field'):
        preprocess_overrides(None, None, None, None, None, tmp_path / "g.json")
    (tmp_path / "l.json").write_text("[1]")
    with pytest.raises(InputError, match="is not a JSON object"):
        preprocess_overrides(None, None, None, None, None, tmp_path / "l.json")


WRONG = {  # each field of a spec, and values of the wrong type or out of its range
    "channels": [True, 2, 3.0, "3", None, [1]],
    "size": [True, False, 28.5, 0, 4097, -1, "28", None, [28], 10**30],
    "resize": [True, 0, 4097, 27.5, "28", [28]],
    "mean": ["0.2", 0.2, [], [True], [float("nan")], [float("inf")], ["0.2"], None, {"0": 1}],
    "std": [[0], [0.0], [-0.5], [float("nan")], [float("inf")], [False], "1", [[1]]],
    "interpolation": ["lanczos", "", 1, True, None, ["bilinear"]],
}
GOOD = {"channels": 1, "size": 28, "resize": None, "mean": [0.5], "std": [0.25], "interpolation": "nearest"}


@pytest.mark.parametrize("name,value", [(n, v) for n, values in WRONG.items() for v in values])
def test_every_preprocessing_field_has_one_type(name, value, tmp_path):
    """The same wrong value is a usage error from a flag, bad input from the user's file (with a
    fix in that file) or from a model's metadata (re-export), each naming the field and its type."""
    from edgeresnet.data.preprocess import FIELDS, FLAGS, REEXPORT, Source, read_fields
    from edgeresnet.errors import UsageError

    expected = FIELDS[name].expected()
    with pytest.raises(InputError) as meta:
        Preprocess.from_dict({**GOOD, name: value}, Source("metadata", "edgeresnet.json"))
    assert meta.value.message.startswith(f"edgeresnet.json: the preprocessing spec's {name} must be {expected}, got ")
    assert meta.value.hint == REEXPORT
    with pytest.raises(InputError) as file:
        read_fields({name: value}, Source("file", "my.json"))
    assert file.value.message.startswith(f'my.json: "{name}" must be {expected}, got ')
    assert file.value.hint.startswith(f'fix it in my.json, e.g. "{name}": ')
    with pytest.raises(UsageError) as flag:
        read_fields({name: value}, FLAGS)
    assert flag.value.message.startswith(f"--{name} must be {FIELDS[name].expected(flag=True)}, got ")
    assert flag.value.hint and "re-export" not in flag.value.hint
    with pytest.raises(InputError, match=f"preprocessing {name} must be"):
        Preprocess(**{**GOOD, name: value})  # built in code: the same schema


def test_the_preprocessing_schema_takes_what_it_should():
    pre = Preprocess.from_dict(GOOD)
    assert (pre.channels, pre.size, pre.resize, pre.mean, pre.std, pre.interpolation) == (1, 28, None, (0.5,), (0.25,), "nearest")
    assert Preprocess.from_dict({**GOOD, "resize": 4096, "size": 1, "mean": [0], "std": [1e-6]}).mean == (0.0,)
    assert Preprocess.from_dict({"channels": 3, "size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]}).interpolation == "bilinear"
    built = Preprocess(np.int64(1), np.int64(28), None, [0.5], [0.5])  # numpy ints from a shape become ints
    assert type(built.size) is int and built.mean == (0.5,)
    assert Preprocess.from_dict(PRE.to_dict()) == PRE


@pytest.mark.parametrize("spec,words", [
    ({k: v for k, v in GOOD.items() if k != "size"}, "size is missing"),
    ({**GOOD, "crop_pct": 0.875}, "crop_pct is not a preprocessing field"),
    ({**GOOD, "mean": [0.1, 0.2, 0.3]}, "mean has 3 values; the model takes 1 channel"),
    ({**GOOD, "channels": 3}, "mean has 1 value; the model takes 3 channels"),
    ("0.2", "the preprocessing spec is not a JSON object"),
    (None, "the preprocessing spec is not a JSON object"),
])
def test_a_models_preprocessing_metadata_is_bad_input(spec, words):
    from edgeresnet.data.preprocess import REEXPORT

    with pytest.raises(InputError, match=words) as exc:
        Preprocess.from_dict(spec)
    assert exc.value.hint == REEXPORT


def test_a_per_channel_mismatch_blames_the_source_that_gave_it():
    """The length check needs the model's channels, known only after loading it: flags are
    still a usage error then, the user's file bad input, naming what to fix."""
    from edgeresnet.data.preprocess import FLAGS, Overrides, Source
    from edgeresnet.errors import UsageError

    file = Source("file", "p.json")
    with pytest.raises(UsageError, match="--mean has 3 values; the model takes 1 channel") as exc:
        PRE.with_overrides(Overrides({"mean": (0.1, 0.2, 0.3)}, {"mean": FLAGS}), channels=1)
    assert "--mean 0.5" in exc.value.hint
    with pytest.raises(InputError, match='p.json: "std" has 2 values; the model takes 1 channel'):
        PRE.with_overrides(Overrides({"std": (0.1, 0.2)}, {"std": file}), channels=1)
    with pytest.raises(InputError, match='p.json: "channels" is 3; the model takes 1 channel'):
        PRE.with_overrides(Overrides({"channels": 3}, {"channels": file}), channels=1)
    with pytest.raises(InputError, match='p.json: "channels" is 3 but mean has 1 value'):
        PRE.with_overrides(Overrides({"channels": 3}, {"channels": file}))  # train: the file may set channels
    rgb = PRE.with_overrides(Overrides({"channels": 3, "mean": (0.5,) * 3, "std": (0.2,) * 3},
                                       dict.fromkeys(("channels", "mean", "std"), file)))
    assert rgb.input_shape == (3, 28, 28)


def test_unlabelled_images_calibrate_but_do_not_train_or_score(tmp_path, calib_set):
    from edgeresnet.errors import InputError

    (tmp_path / "flat").mkdir()
    for i in range(6):
        Image.fromarray(calib_set.images[i, :, :, 0]).save(tmp_path / "flat" / f"{i}.png")
    np.savez(tmp_path / "imgs.npz", images=calib_set.images[:5, :, :, 0])
    for spec, n in ((str(tmp_path / "flat"), 6), (str(tmp_path / "flat" / "*.png"), 6), (f"npz:{tmp_path / 'imgs.npz'}", 5)):
        data = load_split(spec, "train")
        assert not data.labelled and len(data) == n and data.classes == [], spec
        assert data.batch(np.arange(2), Preprocess(1, 28, 28, (0.5,), (0.5,))).shape == (2, 1, 28, 28)
        with pytest.raises(InputError, match="needs labelled data"):
            data.require_labels("training")
    assert load_split("default", "train").labelled
    with pytest.raises(InputError, match="no image files match"):
        load_split(str(tmp_path / "*.jpg"), "train")
