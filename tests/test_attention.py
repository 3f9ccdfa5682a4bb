import pytest
import torch

from dsnet.models.attention import (
    ATTENTIONS,
    AttentionOptions,
    DualSelective,
    SelectiveKernel,
    SqueezeExcite,
    build_attention,
)

MODULES = [DualSelective, SqueezeExcite, SelectiveKernel]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("channels", [16, 24, 64, 256])
@pytest.mark.parametrize("residual", [True, False])
def test_shape_is_preserved(module, channels, residual):
    torch.manual_seed(0)
    x = torch.randn(2, channels, 7, 9)
    out = module(channels, residual=residual)(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("module", MODULES)
def test_residual_module_starts_as_identity(module):
    torch.manual_seed(0)
    x = torch.randn(2, 32, 8, 8)
    assert torch.equal(module(32, residual=True)(x), x)
    assert not torch.allclose(module(32, residual=False)(x), x, atol=1e-2)


def test_ds_residual_adds_the_input_to_the_fused_branches():
    torch.manual_seed(0)
    residual = DualSelective(32, residual=True)
    torch.nn.init.normal_(residual.fuse[1].weight)  # as after training: fuse no longer zero
    plain = DualSelective(32, residual=False)
    plain.load_state_dict(residual.state_dict())
    residual.eval()
    plain.eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        with_skip, without = residual(x), plain(x)
    torch.testing.assert_close(with_skip, x + without)
    assert not torch.allclose(with_skip, without, atol=1e-2)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("residual", [True, False])
def test_training_reduces_loss_and_reaches_every_parameter(module, residual):
    torch.manual_seed(0)
    attention = module(32, residual=residual)
    x = torch.randn(4, 32, 8, 8)
    target = torch.randn(4, 32, 8, 8)
    optimizer = torch.optim.Adam(attention.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(attention(x), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.01
    no_gradient = [
        name
        for name, p in attention.named_parameters()
        if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert no_gradient == []


def test_named_parameters_cover_branch_convs_and_fc_layers():
    names = {name for name, _ in DualSelective(32).named_parameters()}
    for expected in (
        "branch3.0.weight",
        "branch5.0.weight",
        "gate3.fc1.weight",
        "gate3.fc2.weight",
        "gate5.fc1.weight",
        "gate5.fc2.weight",
        "fuse.0.weight",
    ):
        assert expected in names


def test_ds_uses_grouped_3x3_5x5_and_dilated_fuse_convolutions():
    ds = DualSelective(2048)
    assert ds.branch3[0].weight.shape == (2048, 16, 3, 3)  # 128 groups of 16 channels
    assert ds.branch5[0].weight.shape == (2048, 16, 5, 5)
    assert ds.fuse[0].dilation == (2, 2) and ds.fuse[0].padding == (2, 2)
    assert ds.gate3.fc1.out_channels == 2048 // 16
    dense_macs = 2048 * 2048 * (9 + 25 + 9)
    convs = (ds.branch3[0], ds.branch5[0], ds.fuse[0])
    grouped_macs = sum(conv.weight[0].numel() * 2048 for conv in convs)  # per output pixel
    assert grouped_macs * 128 == dense_macs


def test_groups_fall_back_to_a_divisor_of_the_channels():
    assert DualSelective(64).branch5[0].groups == 64  # depthwise
    assert DualSelective(24).branch3[0].groups == 8
    assert SelectiveKernel(16).branches[1][0].groups == 16
    assert SelectiveKernel(16).branches[1][0].dilation == (2, 2)


def test_build_attention_names():
    assert ATTENTIONS == ("none", "se", "sk", "ds")
    assert build_attention("none", 64) is None
    assert isinstance(build_attention("ds", 64), DualSelective)
    assert isinstance(build_attention("se", 64), SqueezeExcite)
    assert isinstance(build_attention("sk", 64), SelectiveKernel)
    assert build_attention("ds", 64, AttentionOptions(residual=False)).residual is False
    with pytest.raises(ValueError, match="none, se, sk, ds"):
        build_attention("cbam", 64)


@pytest.mark.parametrize("module", MODULES)
def test_modules_compute_in_float32_under_cpu_bfloat16_autocast(module):
    """The attention modules sit out CPU bf16 autocast (see `cpu_float32`); inputs may be bf16."""
    torch.manual_seed(0)
    attention = module(64, residual=False)
    x = torch.rand(2, 64, 12, 12)
    expected = attention(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(x.bfloat16())  # what a bf16 convolution before it hands over
        assert torch.nn.Conv2d(64, 8, 1)(got).dtype == torch.bfloat16  # autocast still on
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, attention(x.bfloat16().float()))  # no bf16 inside
    assert (got - expected).abs().max() < 0.05  # only the input was rounded to bf16
