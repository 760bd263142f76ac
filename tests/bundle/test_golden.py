"""The golden set (bundle/golden.py) and the verdict rule it is judged by (ondevice/device.py)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeresnet.ondevice import device
from edgeresnet.bundle import golden
from edgeresnet.data import Preprocess


def test_pick_is_class_balanced_bounded_and_only_from_the_candidates():
    labels = np.array([0] * 50 + [1] * 5 + [2] * 45)
    candidates = np.arange(10, 100)  # 0..9 are, say, calibration images
    chosen = golden.pick(labels, candidates, 12)
    assert len(chosen) == 12 and set(chosen) <= set(candidates) and len(set(chosen)) == 12
    counts = np.bincount(labels[chosen], minlength=3)
    assert counts.min() >= 3 and counts.max() - counts.min() <= 1  # round-robin over the classes
    assert (np.bincount(labels[golden.pick(labels, candidates, 80)]) >= 5).all()  # a small class gives all it has
    assert list(golden.pick(labels, candidates, 1000)) == list(candidates)
    spaced = golden.pick(None, candidates, 4)
    assert list(spaced) == [10, 40, 69, 99]


@pytest.mark.parametrize("channels, size, images", [(1, 28, 500), (3, 32, 500), (3, 224, 27), (3, 1024, 1)])
def test_budget_keeps_the_pixels_under_4_mb(channels, size, images):
    pre = Preprocess(channels, size, None, (0.5,) * channels, (0.5,) * channels)
    n = golden.budget(pre, 10_000)
    assert n == images and (n == 1 or n * channels * size * size <= golden.MAX_BYTES)


def test_make_golden_on_real_images_stores_uint8_and_the_reference_logits(test_set):
    pre = Preprocess(1, 28, 28, (0.2849,), (0.3521,))
    weights = np.random.default_rng(0).standard_normal((28 * 28, 10)).astype(np.float32)
    reference = lambda x: x.reshape(len(x), -1) @ weights  # noqa: E731
    g = golden.make_golden(test_set, np.arange(300, 1300), pre, reference)
    assert g.x.dtype == np.uint8 and g.x.shape == (500, 28, 28, 1) and g.logits.dtype == np.float32
    assert g.index.min() >= 300 and (np.bincount(g.labels, minlength=10) == 50).all()
    assert np.array_equal(g.labels, test_set.labels[g.index])
    np.testing.assert_array_equal(g.inputs(0, 500), test_set.batch(g.index, pre))  # exactly the engines' input
    np.testing.assert_allclose(g.logits, reference(test_set.batch(g.index, pre)), rtol=1e-4, atol=1e-4)
    # the device file's arithmetic is the package's, to the bit
    np.testing.assert_array_equal(device.normalize(g.x, pre.to_dict()), pre.normalize(g.x))


def test_normalize_repeats_gray_images_for_an_rgb_model_as_the_package_does():
    pre = Preprocess(3, 4, None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    x = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 1), dtype=np.uint8)
    np.testing.assert_array_equal(device.normalize(x, pre.to_dict()), pre.normalize(x))


def test_binomial_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for n, q in ((500, 0.001), (500, 0.002), (500, 0.052), (300, 0.03), (27, 0.5 / 27), (1, 0.5)):
        assert device.binomial_quantile(n, q) == int(stats.binom.ppf(0.999, n, q)), (n, q)
    assert device.binomial_quantile(100, 0.0) == 0 and device.binomial_quantile(100, 1.0) == 100


def test_the_rule_uses_the_exports_own_rates_floored_at_half_an_image():
    tol = device.tolerance(500, "int8", {"agreement": 1.0, "top1": 0.948}, labelled=True)
    assert tol["max_disagreements"] == device.binomial_quantile(500, 0.001)  # floor 0.5/n
    assert tol["max_errors"] == device.binomial_quantile(500, 0.052)
    assert "Binomial(n=500, q=0.0010)" in tol["rule"] and "export's disagreement rate" in tol["rule"]
    worse = device.tolerance(500, "int8", {"agreement": 0.98, "top1": None}, labelled=True)
    assert worse["max_disagreements"] > tol["max_disagreements"] and worse["max_errors"] is None
    unknown = device.tolerance(500, "int8", None, labelled=False)
    assert "no export figure" in unknown["rule"] and unknown["max_disagreements"] == device.binomial_quantile(500, 0.03)


def test_verdict_and_metrics():
    classes = np.arange(100) % 4
    ref = np.eye(4, dtype=np.float32)[classes]
    labels = classes.copy()
    labels[0] = 1
    same = device.golden_metrics(ref + 0.01, ref, labels)
    assert same["agreement"] == 1.0 and same["errors"] == 1 and same["top1"] == 0.99
    assert abs(same["max_abs_logit_diff"] - 0.01) < 1e-6
    flipped = ref.copy()
    flipped[:5] = np.roll(flipped[:5], 1, axis=1)
    m = device.golden_metrics(flipped, ref, labels)
    assert m["disagreements"] == 5 and m["predictions_sha256"] != same["predictions_sha256"]
    tol = device.tolerance(100, "int8", {"agreement": 1.0, "top1": 0.99}, labelled=True)
    assert tol["max_disagreements"] == 4
    assert device.verdict(same, tol) == ("passed", None)
    status, why = device.verdict(m, tol)
    assert status == "failed" and "5 of 100 images disagree with FP32 (at most 4 allowed)" in why
    with pytest.raises(ValueError, match="NaN or Inf"):
        device.golden_metrics(ref * np.nan, ref, labels)
