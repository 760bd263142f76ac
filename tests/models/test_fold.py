import pytest
import torch

from edgeresnet import build_model
from edgeresnet.models.fold import fold_bn, verify_fold


def _randomize_bn(model, seed=0):
    """Trained-looking BN statistics, so folding has real work to do."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.2
            m.running_mean.data = torch.randn(n, generator=g) * 0.2
            m.running_var.data = torch.rand(n, generator=g) + 0.5
    return model.eval()


CASES = [  # name, options, folded, kept
    ("resnet20", {}, 21, 0),
    ("resnet20", {"shortcut": "A"}, 19, 0),
    ("preact_resnet20", {}, 9, 10),
    ("resnet18", {"small_input": True}, 20, 0),
    pytest.param("resnet50", {"small_input": True}, 53, 0, marks=pytest.mark.slow),  # seconds each on 2 cores
    pytest.param("preact_resnet50", {"small_input": True}, 32, 17, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,options,folded,kept", CASES)
def test_folding_is_equivalent_on_real_images(name, options, folded, kept, calib_set):
    from edgeresnet.data import Preprocess

    model = _randomize_bn(build_model(name, num_classes=10, in_channels=1, **options))
    pre = Preprocess(1, 28, 28, (0.286,), (0.353,))
    x = calib_set.batch(torch.arange(16).numpy(), pre)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new, report = fold_bn(model)
    verify_fold(model, new, x, report)
    assert (report.folded, report.kept) == (folded, kept)
    assert report.max_rel_error < 1e-4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in new.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched


def test_folded_conv_follows_the_formula():
    model = _randomize_bn(build_model("resnet20", num_classes=10, in_channels=1))
    new, _ = fold_bn(model)
    bn, conv = model.bn1, model.conv1
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(new.conv1.weight, conv.weight * scale.view(-1, 1, 1, 1))
    assert torch.allclose(new.conv1.bias, bn.bias - bn.running_mean * scale)
