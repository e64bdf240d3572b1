"""nets/mobilenet.py: the MobileNetV1 layer table."""
import torch

from nets.mobilenet import STAGES, MobileNetV1


def test_layer_table_has_13_separable_blocks_in_6_6_2_stages():
    assert sum(len(b) for b in STAGES.values()) == 13
    net = MobileNetV1()
    assert [len(net.stage1), len(net.stage2), len(net.stage3)] == [6, 6, 2]


def test_output_stride_32_and_1024_channels():
    with torch.inference_mode():
        out = MobileNetV1().eval()(torch.rand(1, 3, 160, 160))
    assert out.shape == (1, 1024, 5, 5)
