import pytest

torch = pytest.importorskip("torch")

from cepr.edge.rfnet import RFNet, RFNetConfig, count_parameters


def test_rgbd_forward_gives_quarter_resolution_logits():
    m = RFNet(RFNetConfig(width=8, input_size=(160, 120))).eval()
    y = m(torch.randn(2, 3, 120, 160), torch.rand(2, 1, 120, 160))
    assert y.shape == (2, 30, 30, 40)


def test_rgb_only_mode_has_no_depth_branch_and_fewer_parameters():
    rgbd = RFNet(RFNetConfig(width=8))
    rgb = RFNet(RFNetConfig(width=8, use_depth=False))
    assert rgb.depth is None and rgb.fuse is None
    assert count_parameters(rgb) < count_parameters(rgbd)
    assert rgb.eval()(torch.randn(1, 3, 96, 128)).shape == (1, 30, 24, 32)


def test_depth_matters_and_is_required():
    m = RFNet(RFNetConfig(width=8)).eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="depth"):
        m(x)
    a, b = m(x, torch.zeros(1, 1, 64, 64)), m(x, torch.ones(1, 1, 64, 64))
    assert not torch.allclose(a, b)


def test_odd_sizes_decode_to_matching_shapes():
    m = RFNet(RFNetConfig(width=8, blocks=(2, 1, 1, 1))).eval()
    assert m(torch.randn(1, 3, 120, 100), torch.rand(1, 1, 120, 100)).shape == (1, 30, 30, 25)


def test_config_round_trip():
    cfg = RFNetConfig(width=12, blocks=(2, 2, 1, 1), use_depth=False, input_size=(640, 480))
    assert RFNetConfig.from_dict(cfg.to_dict()) == cfg
