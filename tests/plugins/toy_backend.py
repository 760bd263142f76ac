"""A toy engine: ONNX Runtime running a second QDQ encoding (signed int8 activations, zero
point 0, Q/DQ around whole units). The whole of what adding an engine takes: this module."""

from __future__ import annotations

from dataclasses import replace

from edgeresnet.backends.base import OptionSpec
from edgeresnet.backends.onnxruntime import OnnxRuntimeBackend
from edgeresnet.backends.registry import register
from edgeresnet.quantize.profile import Profile

PROFILE = Profile("ort-s8", "int8", 0, "int8", 0, quantize_bias=True, placement="units")


@register
class SignedOrtBackend(OnnxRuntimeBackend):
    name = "ort-s8"
    aliases = ("toy",)
    preference = 90
    suffixes = ()  # .onnx files stay ONNX Runtime's
    qdq_profile = PROFILE
    capabilities = replace(OnnxRuntimeBackend.capabilities, qdq_variants={})
    # An option of its own: export grows --toy-note with no CLI file changed; the value is recorded
    # in its artifacts' details so a test can see it arrived.
    option_specs = (OptionSpec("--toy-note", str, "plain", "Toy engine: a note recorded in its rows.",
                               choices=("plain", "loud")),)

    def build(self, inputs, precision, out_dir):
        art = super().build(inputs, precision, out_dir)
        art.details["toy_note"] = self.options["toy_note"]
        return art

    def int8_kernel(self) -> tuple[str, str]:
        return "s8s8", "signed int8 activations (a toy second profile)"
