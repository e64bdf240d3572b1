"""nets/inception_resnetv1.py: block structure and feature map sizes."""
import torch

from nets.inception_resnetv1 import InceptionResnetV1


def test_block_counts_scales_and_final_block_without_relu():
    net = InceptionResnetV1()
    assert (len(net.repeat_1), len(net.repeat_2), len(net.repeat_3)) == (5, 10, 5)
    assert {b.scale for b in net.repeat_1} == {0.17}
    assert {b.scale for b in net.repeat_2} == {0.10}
    assert {b.scale for b in net.repeat_3} == {0.20}
    assert isinstance(net.block8.relu, torch.nn.Identity)
    assert all(m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_feature_map_sizes_for_160_and_112():
    net = InceptionResnetV1().eval()
    with torch.inference_mode():
        assert net(torch.rand(1, 3, 160, 160)).shape == (1, 1792, 3, 3)
        assert net(torch.rand(1, 3, 112, 112)).shape == (1, 1792, 2, 2)
