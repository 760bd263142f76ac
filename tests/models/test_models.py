import json
from pathlib import Path

import pytest
import torch

from edgeresnet import build_model, list_models
from edgeresnet.cli.models import _count
from edgeresnet.errors import InputError
from edgeresnet.models.registry import ArchSpec, get_arch, register

TORCHVISION = json.loads((Path(__file__).parents[1] / "data" / "torchvision_resnet_keys.json").read_text())

# Parameter counts torchvision documents for its ResNets at 1000 classes.
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                      "resnet101": 44_549_160, "resnet152": 60_192_808}


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", TORCHVISION_PARAMS.items())
def test_imagenet_param_counts_match_torchvision(name, expected):
    assert n_params(build_model(name, num_classes=1000)) == expected


def test_resnet20_is_027m():
    model = build_model("resnet20", num_classes=10)
    assert round(n_params(model) / 1e6, 2) == 0.27
    assert round(n_params(build_model("resnet20", num_classes=10, shortcut="A")) / 1e6, 2) == 0.27


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_state_dict_keys_and_shapes_equal_torchvision(name):
    # Reference: torchvision 0.29.2's own models, dumped to tests/data (see its README).
    ours = [[k, list(v.shape)] for k, v in build_model(name).state_dict().items()]
    assert ours == TORCHVISION["models"][name]["state_dict"]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_weights_give_identical_outputs(name):
    tv = pytest.importorskip("torchvision.models", reason="torchvision is not installable on CPU-only machines here")
    ref = getattr(tv, name)().eval()
    ours = build_model(name).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


CIFAR = [n for n in list_models() if get_arch(n).family == "cifar"]
IMAGENET = [n for n in list_models() if get_arch(n).family == "imagenet"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith(("56", "110", "1202")) else n
                                  for n in CIFAR])  # the deep ones take seconds each: slow
@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3)])
def test_cifar_family_shapes(name, size, channels):
    model = build_model(name, num_classes=10, in_channels=channels).eval()
    with torch.no_grad():
        assert model(torch.randn(2, channels, size, size)).shape == (2, 10)


# The deep ones take seconds each on 2 cores: slow; the fast tier keeps the 18/34 of each family.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith(("50", "101", "152")) else n
                                  for n in IMAGENET])
@pytest.mark.parametrize("size,small", [(64, False), (32, True)])
def test_imagenet_family_shapes(name, size, small):
    model = build_model(name, num_classes=7, in_channels=1, small_input=small).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, size, size)).shape == (1, 7)


def test_small_input_stem_keeps_resolution():
    model = build_model("resnet18", num_classes=10, small_input=True)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    assert build_model("resnet18").conv1.kernel_size == (7, 7)


def test_stride_sits_on_the_3x3_in_bottleneck():
    block = build_model("resnet50").layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].kernel_size == (1, 1) and block.downsample[0].stride == (2, 2)


def test_preact_units_are_full_preactivation():
    model = build_model("preact_resnet20", num_classes=10)
    block = model.layer2[0]
    assert isinstance(block.bn1, torch.nn.BatchNorm2d) and block.bn1.num_features == 16  # BN before conv1
    assert isinstance(model.final_bn, torch.nn.BatchNorm2d)  # final BN + ReLU before pooling
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in block.downsample.modules())


def test_zero_init_residual_makes_blocks_identity():
    model = build_model("resnet20", num_classes=10, zero_init_residual=True).eval()
    block = model.layer1[1]
    x = torch.relu(torch.randn(1, 16, 8, 8))
    with torch.no_grad():
        assert torch.allclose(block(x), x)
    assert all(float(m.last_bn().weight.detach().abs().sum()) == 0 for m in model.modules() if hasattr(m, "last_bn"))


def test_kaiming_init_fan_out():
    conv = build_model("resnet20", num_classes=10).layer3[0].conv2
    expected = (2.0 / (conv.out_channels * 9)) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.05


def test_registry_rejects_duplicates_and_suggests():
    with pytest.raises(ValueError, match="already registered"):
        register(ArchSpec("resnet18", "imagenet", "basic", (2, 2, 2, 2)))
    with pytest.raises(InputError, match="resnet18"):
        get_arch("resnet81")


@pytest.mark.parametrize("name", list_models())
def test_torch_free_param_count_matches_torch(name):
    assert _count(name, 1000) == n_params(build_model(name))
