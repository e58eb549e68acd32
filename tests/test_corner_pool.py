"""Corner / centre pooling (common.ops.corner_pool) against a naive reference written here: the
authors' C++ loop (running max from one border; the gradient to the arg-max, which moves only on a
strictly greater value), one position at a time."""
import pytest
import torch

from common.ops import (
    CascadeCornerPool,
    CenterPool,
    CornerPool,
    bottom_pool,
    column_max_pool,
    left_pool,
    right_pool,
    row_max_pool,
    top_pool,
)

# direction -> (dim, scan from the end)
DIRS = {"top": (2, True), "bottom": (2, False), "left": (3, True), "right": (3, False)}
FNS = {"top": top_pool, "bottom": bottom_pool, "left": left_pool, "right": right_pool}


def naive_pool(x, direction):
    """Forward values and, for each output position, the input index its gradient goes to."""
    dim, reverse = DIRS[direction]
    x = x.detach().double()
    N, C, H, W = x.shape
    out = torch.empty_like(x)
    arg = torch.empty(x.shape, dtype=torch.long)
    L = x.shape[dim]
    order = list(range(L - 1, -1, -1)) if reverse else list(range(L))
    for n in range(N):
        for c in range(C):
            for o in range(H if dim == 3 else W):
                best, best_i = None, None
                for i in order:
                    v = float(x[n, c, i, o] if dim == 2 else x[n, c, o, i])
                    if best is None or v > best:  # strictly greater, as the C++ code
                        best, best_i = v, i
                    if dim == 2:
                        out[n, c, i, o], arg[n, c, i, o] = best, best_i
                    else:
                        out[n, c, o, i], arg[n, c, o, i] = best, best_i
    return out, arg


def naive_grad(x, grad_out, direction):
    dim, _ = DIRS[direction]
    _, arg = naive_pool(x, direction)
    g = torch.zeros_like(x, dtype=torch.float64)
    N, C, H, W = x.shape
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    a = int(arg[n, c, i, j])
                    if dim == 2:
                        g[n, c, a, j] += grad_out[n, c, i, j]
                    else:
                        g[n, c, i, a] += grad_out[n, c, i, j]
    return g


@pytest.mark.parametrize("direction", list(DIRS))
@pytest.mark.parametrize("ties", [False, True])
def test_pool_forward_and_gradient_equal_the_naive_loop(direction, ties):
    g = torch.Generator().manual_seed(0)
    if ties:  # few distinct values: many tied maxima in every scan
        x = torch.randint(0, 3, (2, 3, 5, 6), generator=g).float()
    else:
        x = torch.randn(2, 3, 5, 6, generator=g)
    x.requires_grad_(True)
    out = FNS[direction](x)
    ref, _ = naive_pool(x, direction)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=0)
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)
    torch.testing.assert_close(x.grad.double(), naive_grad(x, grad_out.double(), direction), rtol=1e-6, atol=1e-6)


def test_tie_gradient_goes_to_the_farthest_maximum():
    # TopPool scans from the bottom: rows 3 and 1 tie at 5; every output row <= 3 sends its gradient
    # to row 3 (the first max in scan order), never to row 1.
    x = torch.tensor([1.0, 5.0, 2.0, 5.0, 0.0]).view(1, 1, 5, 1).requires_grad_(True)
    out = top_pool(x)
    assert out.flatten().tolist() == [5.0, 5.0, 5.0, 5.0, 0.0]
    out.sum().backward()
    assert x.grad.flatten().tolist() == [0.0, 0.0, 0.0, 4.0, 1.0]


def test_centre_pooling_is_row_max_plus_column_max():
    x = torch.randn(2, 4, 6, 7, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(column_max_pool(x), x.amax(2, keepdim=True).expand_as(x))
    torch.testing.assert_close(row_max_pool(x), x.amax(3, keepdim=True).expand_as(x))
    # The CenterPool module: p_conv1(col_max(p1_conv1 x) + row_max(p2_conv1 x)) ... (its pooled sum).
    m = CenterPool(8, mid_channels=4).eval()
    y = torch.randn(1, 8, 5, 5)
    a, b = m.p1_conv1(y), m.p2_conv1(y)
    torch.testing.assert_close(m.pooled(y), a.amax(2, keepdim=True) + b.amax(3, keepdim=True))
    assert m(y).shape == y.shape


def test_pool_modules_keys_and_shapes():
    cp = CornerPool(16, ("top", "left"), mid_channels=8)
    keys = {k for k in cp.state_dict() if not k.endswith("num_batches_tracked")}
    assert keys == {
        "p1_conv1.conv.weight", *{f"p1_conv1.bn.{s}" for s in ("weight", "bias", "running_mean", "running_var")},
        "p2_conv1.conv.weight", *{f"p2_conv1.bn.{s}" for s in ("weight", "bias", "running_mean", "running_var")},
        "p_conv1.weight", *{f"p_bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var")},
        "conv1.weight", *{f"bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var")},
        "conv2.conv.weight", *{f"conv2.bn.{s}" for s in ("weight", "bias", "running_mean", "running_var")},
    }
    cc = CascadeCornerPool(16, ("bottom", "right"), mid_channels=8)
    extra = set(cc.state_dict()) - set(cp.state_dict())
    assert {"look_conv1.conv.weight", "look_conv2.bn.weight", "P1_look_conv.weight", "P2_look_conv.weight"} <= extra
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    cc(x).sum().backward()
    assert x.grad.shape == x.shape and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="unknown pool"):
        CornerPool(16, ("up", "left"))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        top_pool(torch.zeros(3, 4))


def test_cascade_branch_looks_then_pools():
    # Branch 1 of top-left: TopPool(P1_look_conv(p1_conv1(x) + LeftPool(look_conv1(x)))).
    m = CascadeCornerPool(6, ("top", "left"), mid_channels=3).eval()
    x = torch.randn(1, 6, 5, 4)
    b1 = top_pool(m.P1_look_conv(m.p1_conv1(x) + left_pool(m.look_conv1(x))))
    b2 = left_pool(m.P2_look_conv(m.p2_conv1(x) + top_pool(m.look_conv2(x))))
    torch.testing.assert_close(m.pooled(x), b1 + b2)


def test_pools_keep_half_precision_dtypes():
    x = torch.randn(1, 2, 4, 4).to(torch.bfloat16).requires_grad_(True)
    y = top_pool(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
