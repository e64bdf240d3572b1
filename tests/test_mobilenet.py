"""nets/mobilenet.py: its depthwise convolutions train in float32 under bfloat16 autocast (the shapes, key
layout and numbers of both backbones are in test_models.py)."""
import pytest
import torch

from nets.mobilenet import DepthwiseConv2d, MobileNetV1


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
