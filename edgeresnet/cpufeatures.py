"""The CPU's INT8-relevant features as the runtimes see them: CPUID on x86, HWCAP on ARM.

ONNX Runtime's MLAS and oneDNN choose their int8 kernels from CPUID (x86) and the kernel's
HWCAP (ARM), not from /proc/cpuinfo. The two agree on bare metal, but not always elsewhere.
Under qemu-user, /proc/cpuinfo is the host's while CPUID and HWCAP are the emulated CPU's,
and some VMs mask flags. So the features are read the runtimes' way, and /proc/cpuinfo is
only the fallback where executable memory is refused (hardened kernels).
"""

from __future__ import annotations

import ctypes
import mmap
import platform

# void cpuid(uint32 leaf, uint32 subleaf, uint32 out[4]): System V x86-64 calling convention.
_CPUID_CODE = bytes([
    0x53,                    # push rbx (callee-saved; cpuid clobbers it)
    0x49, 0x89, 0xD0,        # mov r8, rdx (out)
    0x89, 0xF8,              # mov eax, edi (leaf)
    0x89, 0xF1,              # mov ecx, esi (subleaf)
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov [r8+12], edx
    0x5B,                    # pop rbx
    0xC3,                    # ret
])

# (leaf, subleaf, register index eax=0 ebx=1 ecx=2 edx=3, bit) -> the name machine.ISA_FLAGS uses
_X86_BITS = {
    (7, 0, 1, 5): "AVX2", (1, 0, 2, 12): "FMA", (7, 0, 1, 16): "AVX-512F", (7, 0, 2, 11): "AVX-512 VNNI",
    (7, 1, 0, 4): "AVX-VNNI", (7, 1, 0, 5): "AVX-512 BF16", (7, 0, 3, 23): "AVX-512 FP16",
    (7, 0, 3, 25): "AMX-INT8", (7, 0, 3, 22): "AMX-BF16",
}
# AT_HWCAP (16) and AT_HWCAP2 (26) bits of Linux on arm64 (asm/hwcap.h)
_ARM_BITS = {(16, 1): "NEON", (16, 20): "ARM dot-product", (16, 9): "ARM fp16", (16, 22): "SVE", (26, 13): "ARM i8mm"}


def _x86_cpuid() -> dict[tuple[int, int], tuple[int, int, int, int]]:
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    try:
        buf.write(_CPUID_CODE)
        anchor = ctypes.c_char.from_buffer(buf)
        fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(
            ctypes.addressof(anchor))
        regs = (ctypes.c_uint32 * 4)()
        fn(0, 0, regs)
        max_leaf = regs[0]
        out = {}
        for leaf, sub in ((1, 0), (7, 0), (7, 1)):
            if leaf <= max_leaf:
                fn(leaf, sub, regs)
                out[(leaf, sub)] = tuple(regs)
        del fn, anchor
        return out
    finally:
        buf.close()


def runtime_isa() -> tuple[list[str], str] | None:
    """(feature names, where they came from) read as the runtimes read them; None when this
    machine allows neither (then machine.cpu falls back to /proc/cpuinfo)."""
    arch = platform.machine().lower()
    try:
        if arch in ("x86_64", "amd64"):
            leaves = _x86_cpuid()
            names = [n for (leaf, sub, reg, bit), n in _X86_BITS.items() if (leaves.get((leaf, sub), (0, 0, 0, 0))[reg] >> bit) & 1]
            return names, "cpuid"
        if arch in ("aarch64", "arm64"):
            libc = ctypes.CDLL(None)
            libc.getauxval.restype = ctypes.c_ulong
            libc.getauxval.argtypes = [ctypes.c_ulong]
            caps = {at: libc.getauxval(at) for at in (16, 26)}
            return [n for (at, bit), n in _ARM_BITS.items() if (caps[at] >> bit) & 1], "hwcap"
    except (OSError, ValueError, AttributeError, PermissionError):  # no executable memory, no getauxval
        return None
    return None
