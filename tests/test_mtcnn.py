"""The MTCNN networks: weight files load as they are, shapes and the fast max-pool are right."""
import os

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, SHARED, requires_shared
from nets.mtcnn import MaxPool, ONet, PNet, RNet
from utils.checkpoint import load_file

NETS = {"pnet": PNet, "rnet": RNet, "onet": ONet}


@pytest.mark.parametrize("name", NETS)
def test_shipped_weights_load_strictly(name):
    state = load_file(os.path.join(ROOT, "model_data", f"{name}.pt"), "")
    net = NETS[name]()
    net.load_state_dict(state)  # strict: every name and shape must match
    assert list(net.state_dict()) == list(state)


@requires_shared
@pytest.mark.parametrize("name", NETS)
def test_shipped_weights_are_the_shared_ones(name):
    shipped = load_file(os.path.join(ROOT, "model_data", f"{name}.pt"), "")
    shared = load_file(os.path.join(SHARED, "weights", "mtcnn", f"{name}.pt"), "")
    assert shipped.keys() == shared.keys()
    assert all(torch.equal(shipped[k], shared[k]) for k in shared)


def test_output_shapes():
    torch.manual_seed(0)
    prob, reg = PNet()(torch.randn(2, 3, 30, 40))
    assert prob.shape == (2, 10, 15) and reg.shape == (2, 4, 10, 15)
    assert ((prob >= 0) & (prob <= 1)).all()
    prob, reg = RNet()(torch.randn(5, 3, 24, 24))
    assert prob.shape == (5,) and reg.shape == (5, 4)
    prob, reg, points = ONet()(torch.randn(5, 3, 48, 48))
    assert prob.shape == (5,) and reg.shape == (5, 4) and points.shape == (5, 10)


@pytest.mark.parametrize("kernel,stride,size", [(2, 2, (12, 12)), (2, 2, (11, 17)), (3, 2, (22, 22)),
                                                (3, 2, (23, 9)), (3, 2, (3, 3))])
def test_max_pool_matches_torch_ceil_mode(kernel, stride, size):
    x = torch.randn(3, 4, *size)
    expected = F.max_pool2d(x, kernel, stride, ceil_mode=True)
    assert torch.equal(MaxPool(kernel, stride)(x), expected)
