"""nets/mobilenet.py: the MobileNetV1 layer table and its float32 depthwise convolutions in bfloat16 training."""
import pytest
import torch

from nets.mobilenet import STAGES, DepthwiseConv2d, MobileNetV1


def test_layer_table_has_13_separable_blocks_in_6_6_2_stages():
    assert sum(len(b) for b in STAGES.values()) == 13
    net = MobileNetV1()
    assert [len(net.stage1), len(net.stage2), len(net.stage3)] == [6, 6, 2]


def test_output_stride_32_and_1024_channels():
    with torch.inference_mode():
        out = MobileNetV1().eval()(torch.rand(1, 3, 160, 160))
    assert out.shape == (1, 1024, 5, 5)


@pytest.mark.parametrize("training, expected", [(True, torch.float32), (False, torch.bfloat16)])
def test_depthwise_convolutions_train_in_float32_under_bfloat16_autocast(training, expected):
    torch.manual_seed(0)
    net = MobileNetV1().train(training)
    depthwise = [m for m in net.modules() if isinstance(m, DepthwiseConv2d)]
    assert len(depthwise) == 13 and all(m.groups == m.in_channels for m in depthwise)
    seen = []
    depthwise[0].register_forward_hook(lambda module, inputs, out: seen.append(out.dtype) and None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(torch.rand(2, 3, 64, 64))
    assert seen == [expected]
    plain = torch.nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False)
    plain.load_state_dict(depthwise[0].state_dict())
    x = torch.rand(2, 32, 16, 16)
    torch.testing.assert_close(depthwise[0](x), plain(x))
