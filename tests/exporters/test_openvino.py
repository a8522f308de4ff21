"""The OpenVINO target's process-wide state: sessions that come and go leave the process safe for signals."""

import ctypes
import gc
import sys

import pytest
import torch

from exporters import onnx as onnx_export
from pipeline.models.build import build_model
from tests.tiny_models import TINY_SPECS


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _signal_stack() -> _SignalStack:
    current = _SignalStack()
    assert ctypes.CDLL(None, use_errno=True).sigaltstack(None, ctypes.byref(current)) == 0
    return current


def _mapped(address: int) -> bool:
    with open("/proc/self/maps") as maps:
        for line in maps:
            low, high = (int(part, 16) for part in line.split()[0].split("-"))
            if low <= address < high:
                return True
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signal stacks as Linux has them")
def test_sessions_closed_out_of_order_leave_the_thread_on_a_mapped_signal_stack(tmp_path):
    pytest.importorskip("openvino")
    from exporters.openvino import OpenVinoCpu

    target = OpenVinoCpu()
    torch.manual_seed(0)
    onnx_export.export(build_model(TINY_SPECS["resnet"]).eval(), torch.randn(1, 3, 32, 32), tmp_path / "model.onnx")
    target.compile(tmp_path / "model.onnx", tmp_path, "fp32")
    first = target.open(tmp_path, (1, 3, 32, 32), threads=1)
    second = target.open(tmp_path, (1, 3, 32, 32), threads=1)
    del first  # the older session goes first: the order that once left an unmapped stack behind
    gc.collect()
    del second
    gc.collect()
    stack = _signal_stack()
    SS_DISABLE = 2
    # a signal handled on an unmapped stack kills the process (SIGSEGV from the kernel)
    assert stack.ss_flags & SS_DISABLE or _mapped(stack.ss_sp)
