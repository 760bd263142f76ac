import os
import pickle
from pathlib import Path

import pytest
import torch

from edgeresnet import build_model
from edgeresnet.models.checkpoint import ModelMeta, atomic_write, load_checkpoint, save_checkpoint
from edgeresnet.data import Preprocess
from edgeresnet.errors import InputError

META = ModelMeta(arch="resnet20", num_classes=10, in_channels=1,
                 preprocess=Preprocess(1, 28, 28, (0.286,), (0.353,)), classes=[f"c{i}" for i in range(10)],
                 train={"command": "edgeresnet train ...", "seed": 3}, metrics={"val_top1": 0.5})


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_keeps_weights_and_metadata(tmp_path, suffix, real_images):
    model = build_model("resnet20", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        model.bn1.running_mean.uniform_()  # buffers travel too
    path = tmp_path / f"m{suffix}"
    save_checkpoint(path, model, META)
    ckpt = load_checkpoint(path)
    x = torch.from_numpy(real_images[:4, None].astype("float32") / 255)
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))
    assert ckpt.meta.to_dict() == META.to_dict()
    assert ckpt.meta.input_size == 28 and ckpt.meta.train["seed"] == 3
    assert oct(path.stat().st_mode & 0o777) != "0o600"  # not left private by the temp file


def test_plain_state_dict_needs_arch(tmp_path):
    model = build_model("resnet18", num_classes=5, in_channels=1, small_input=True)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    with pytest.raises(InputError, match="--arch"):
        load_checkpoint(tmp_path / "plain.pth")
    ckpt = load_checkpoint(tmp_path / "plain.pth", arch="resnet18")
    assert (ckpt.meta.num_classes, ckpt.meta.in_channels, ckpt.meta.small_input) == (5, 1, True)
    with pytest.raises(InputError, match="does not match resnet34"):
        load_checkpoint(tmp_path / "plain.pth", arch="resnet34")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/edgeresnet-ckpt-pwned",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = Path("/tmp/edgeresnet-ckpt-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Exploit()}, path)
    with pytest.raises(InputError, match="would run code"):
        load_checkpoint(path, arch="resnet20")
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", os.urandom(4096), pickle.dumps([1, 2, 3])])
def test_garbage_files_are_input_errors(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(InputError):
        load_checkpoint(path, arch="resnet20")


def test_random_bytes_are_always_input_errors(tmp_path):
    """200 seeded random files: the weights-only unpickler fails in many ways (IndexError,
    KeyError, UnicodeDecodeError, ...); every one must be the same one-line input error."""
    import numpy as np

    rng = np.random.default_rng(0)
    path = tmp_path / "random.pt"
    for _ in range(200):
        path.write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
        with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
            load_checkpoint(path, arch="resnet20")


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "keep.pt"
    target.write_bytes(b"precious")

    def broken(p: Path) -> None:
        p.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]
