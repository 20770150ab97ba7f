"""Local attention grid mixers: Swin windows and NAT neighbourhoods against global attention, fast == reference,
equivariance to shifts on a torus, and the neighbourhoods clamped at the borders."""

from __future__ import annotations

import pytest
import torch

import tokenmix

D = 8


def _pair(name, **options):
    reference = tokenmix.create(name, D, num_heads=2, impl="reference", **options).double()
    fast_impl = [i for i in tokenmix.spec(name).impls if i != "reference"][0]
    fast = tokenmix.create(name, D, num_heads=2, impl=fast_impl, **options).double()
    with torch.no_grad():
        reference.bias_table.normal_()  # a bias of order 1, so a misplaced entry shows
    fast.load_state_dict(reference.state_dict())
    return reference, fast


def _assert_same_forward_and_backward(reference, fast, x):
    x = x.requires_grad_()
    y, y_fast = reference(x), fast(x)
    torch.testing.assert_close(y_fast, y, rtol=1e-10, atol=1e-12)
    weights = torch.randn_like(y)
    grads = torch.autograd.grad((y * weights).sum(), [x, *reference.parameters()])
    grads_fast = torch.autograd.grad((y_fast * weights).sum(), [x, *fast.parameters()])
    for got, want in zip(grads_fast, grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _global_attention(mixer, x):
    """Plain multi-head attention with the mixer's projections, no bias: softmax(q kᵀ/√d) v."""
    b, c, h, w = x.shape
    q, k, v = mixer.qkv(x).flatten(2).transpose(1, 2).chunk(3, dim=-1)
    heads = []
    for qh, kh, vh in zip(q.tensor_split(2, -1), k.tensor_split(2, -1), v.tensor_split(2, -1)):
        heads.append(torch.softmax(qh @ kh.transpose(1, 2) / (c // 2) ** 0.5, dim=-1) @ vh)
    return mixer.out(torch.cat(heads, -1).transpose(1, 2).reshape(b, c, h, w))


@pytest.mark.parametrize("window_size,shift_size,height,width", [
    (3, 0, 6, 6), (3, 1, 6, 9), (3, 1, 7, 5), (4, 2, 9, 6), (3, 2, 2, 5), (4, 0, 5, 5), (2, 1, 3, 3)])
def test_swin_windows_equal_masked_global_reference(window_size, shift_size, height, width):
    reference, fast = _pair("swin_attention", window_size=window_size, shift_size=shift_size)
    _assert_same_forward_and_backward(reference, fast, torch.randn(2, D, height, width, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_swin_window_covering_the_image_is_global_attention(impl):
    mixer = tokenmix.create("swin_attention", D, num_heads=2, window_size=8, impl=impl).double()
    with torch.no_grad():
        mixer.bias_table.zero_()
    x = torch.randn(2, D, 5, 8, dtype=torch.float64)  # padded to 8×8 inside sdpa: the padding must not leak
    torch.testing.assert_close(mixer(x), _global_attention(mixer, x))


def test_swin_windows_are_equivariant_to_window_shifts_on_a_torus():
    mixer = tokenmix.create("swin_attention", D, num_heads=2, window_size=3).double()
    x = torch.randn(1, D, 6, 9, dtype=torch.float64)
    shifted = x.roll((3, 6), dims=(2, 3))
    torch.testing.assert_close(mixer(shifted), mixer(x).roll((3, 6), dims=(2, 3)))
    # a shift that is not a multiple of the window moves the windows: not equivariant
    assert not torch.allclose(mixer(x.roll(1, dims=2)), mixer(x).roll(1, dims=2))


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_shifted_windows_are_the_cyclic_shift_with_the_border_masked(impl):
    # On a torus, shifted windows are plain windows of the grid rolled by −s, rolled back. Swin masks the windows
    # that wrap around the border; all other positions agree with the torus.
    m, s = 3, 1
    plain = tokenmix.create("swin_attention", D, num_heads=2, window_size=m, impl=impl).double()
    shifted = tokenmix.create("swin_attention", D, num_heads=2, window_size=m, shift_size=s, impl=impl).double()
    shifted.load_state_dict(plain.state_dict())
    x = torch.randn(1, D, 6, 9, dtype=torch.float64)
    torus = plain(x.roll((-s, -s), dims=(2, 3))).roll((s, s), dims=(2, 3))
    y = shifted(x)
    inner = (slice(None), slice(None), slice(s, 6 - m + s), slice(s, 9 - m + s))
    torch.testing.assert_close(y[inner], torus[inner])
    assert not torch.allclose(y[..., 0, 0], torus[..., 0, 0])  # the corner's window wraps: masked in Swin


@pytest.mark.parametrize("kernel_size,height,width", [(3, 5, 6), (5, 4, 7), (3, 1, 5), (7, 9, 8), (1, 3, 4)])
def test_neighborhood_gather_equals_masked_global_reference(kernel_size, height, width):
    reference, fast = _pair("neighborhood_attention", kernel_size=kernel_size)
    _assert_same_forward_and_backward(reference, fast, torch.randn(2, D, height, width, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["reference", "gather"])
def test_neighborhood_covering_the_image_is_global_attention(impl):
    mixer = tokenmix.create("neighborhood_attention", D, num_heads=2, kernel_size=7, impl=impl).double()
    with torch.no_grad():
        mixer.bias_table.zero_()
    x = torch.randn(2, D, 5, 7, dtype=torch.float64)  # the 5-row axis is shorter than k: covered whole
    torch.testing.assert_close(mixer(x), _global_attention(mixer, x))


@pytest.mark.parametrize("impl", ["reference", "gather"])
def test_neighborhoods_are_clamped_at_the_borders(impl):
    mixer = tokenmix.create("neighborhood_attention", D, num_heads=2, kernel_size=3, impl=impl).double()
    x = torch.randn(1, D, 6, 6, dtype=torch.float64)
    y = mixer(x)

    def changed_outputs(row, col):
        x2 = x.clone()
        x2[:, :, row, col] += 1.0
        return (mixer(x2) - y).abs().amax(1)[0] > 1e-12  # (H, W): outputs that see position (row, col)

    # the corner query (0, 0) sees the corner 3×3 block, which reaches row 2 / column 2 (not a centred window)
    assert changed_outputs(2, 2)[0, 0] and not changed_outputs(3, 0)[0, 0] and not changed_outputs(0, 3)[0, 0]
    # an interior query (3, 3) sees rows and columns 2..4
    seen = changed_outputs(4, 2)
    assert seen[3, 3] and not changed_outputs(5, 3)[3, 3] and not changed_outputs(3, 1)[3, 3]
    # position (0, 0) is seen by queries whose windows start at row 0 and column 0: rows/columns 0..1
    assert changed_outputs(0, 0).nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_bad_window_options_raise():
    with pytest.raises(tokenmix.MixerInputError, match="shift_size"):
        tokenmix.create("swin_attention", D, window_size=4, shift_size=4)
    with pytest.raises(tokenmix.MixerInputError, match="odd"):
        tokenmix.create("neighborhood_attention", D, kernel_size=4)


def _halo_pair(**options):
    reference = tokenmix.create("halo_attention", D, num_heads=2, impl="reference", **options).double()
    fast = tokenmix.create("halo_attention", D, num_heads=2, impl="sdpa", **options).double()
    fast.load_state_dict(reference.state_dict())
    return reference, fast


@pytest.mark.parametrize("block_size,halo_size,height,width", [
    (4, 1, 5, 6), (2, 1, 5, 7), (3, 0, 6, 6), (2, 2, 3, 3), (4, 2, 9, 4), (1, 1, 3, 4)])
def test_halo_blocks_equal_masked_global_reference(block_size, halo_size, height, width):
    reference, fast = _halo_pair(block_size=block_size, halo_size=halo_size)
    _assert_same_forward_and_backward(reference, fast, torch.randn(2, D, height, width, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_halo_block_covering_the_image_is_global_attention(impl):
    mixer = tokenmix.create("halo_attention", D, num_heads=2, block_size=8, halo_size=1, impl=impl).double()
    with torch.no_grad():
        mixer.row_embedding.zero_()
        mixer.column_embedding.zero_()
    x = torch.randn(2, D, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(mixer(x), _global_attention(mixer, x))


def test_halo_relative_logits_are_q_dot_row_and_column_embeddings():
    mixer = tokenmix.create("halo_attention", D, num_heads=2, block_size=2, halo_size=1).double()
    q = torch.randn(3, 4, dtype=torch.float64)  # three queries, head_dim 4
    rows, cols = torch.tensor([[0, 2], [-2, 1], [1, -1]]), torch.tensor([[1, -2], [0, 0], [2, 1]])
    logits = mixer._position_logits(q, rows, cols)
    span = 3
    for i in range(3):
        for j in range(2):
            want = q[i, :2] @ mixer.row_embedding[rows[i, j] + span - 1] + \
                q[i, 2:] @ mixer.column_embedding[cols[i, j] + span - 1]
            torch.testing.assert_close(logits[i, j], want)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_halo_neighbourhood_is_the_block_plus_halo(impl):
    mixer = tokenmix.create("halo_attention", D, num_heads=2, block_size=2, halo_size=1, impl=impl).double()
    x = torch.randn(1, D, 6, 6, dtype=torch.float64)
    y = mixer(x)

    def sees(query, key):
        x2 = x.clone()
        x2[:, :, key[0], key[1]] += 1.0
        return bool((mixer(x2) - y)[0, :, query[0], query[1]].abs().max() > 1e-12)

    # query (1, 1) is in block rows/cols 0..1: it sees 0..2 (−1 is outside the image)
    assert sees((1, 1), (2, 2)) and not sees((1, 1), (3, 1)) and not sees((1, 1), (0, 3))
    # query (2, 3) is in block rows 2..3, columns 2..3: it sees rows 1..4, columns 1..4
    assert sees((2, 3), (1, 1)) and sees((2, 3), (4, 4)) and not sees((2, 3), (5, 3)) and not sees((2, 3), (2, 0))


def _line_attention(qkv_conv, out_conv, x, axis):
    """Explicit loop over the lines (rows if axis == 3, columns if 2): softmax(q kᵀ/√d) v per head."""
    qkv = qkv_conv(x)
    out = torch.empty_like(x)
    for line in range(x.shape[5 - axis]):
        tokens = (qkv[:, :, line, :] if axis == 3 else qkv[:, :, :, line]).transpose(1, 2)  # (B, length, 3C)
        q, k, v = tokens.chunk(3, dim=-1)
        heads = [torch.softmax(qh @ kh.transpose(1, 2) / (D // 2) ** 0.5, dim=-1) @ vh
                 for qh, kh, vh in zip(q.tensor_split(2, -1), k.tensor_split(2, -1), v.tensor_split(2, -1))]
        line_out = torch.cat(heads, -1).transpose(1, 2)
        if axis == 3:
            out[:, :, line, :] = line_out
        else:
            out[:, :, :, line] = line_out
    return out_conv(out)


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_axial_attention_is_row_then_column_loops(impl):
    mixer = tokenmix.create("axial_attention", D, num_heads=2, impl=impl).double()
    x = torch.randn(2, D, 4, 6, dtype=torch.float64)
    rows = _line_attention(mixer.row_qkv, mixer.row_out, x, axis=3)
    want = _line_attention(mixer.column_qkv, mixer.column_out, rows, axis=2)
    torch.testing.assert_close(mixer(x), want)


def test_axial_sdpa_equals_reference_with_gradients():
    reference = tokenmix.create("axial_attention", D, num_heads=2, impl="reference").double()
    fast = tokenmix.create("axial_attention", D, num_heads=2, impl="sdpa").double()
    fast.load_state_dict(reference.state_dict())
    _assert_same_forward_and_backward(reference, fast, torch.randn(2, D, 5, 3, dtype=torch.float64))


@pytest.mark.parametrize("impl", ["reference", "sdpa"])
def test_shifted_padded_windows_hand_checked(impl):
    # 5×5 grid, M = 3, s = 1: per axis the windows are {0}, {1, 2, 3}, {4} (the last one padded to 3 wide).
    mixer = tokenmix.create("swin_attention", D, num_heads=2, window_size=3, shift_size=1, impl=impl).double()
    x = torch.randn(1, D, 5, 5, dtype=torch.float64)
    y = mixer(x)

    def seen_by(row, col):
        x2 = x.clone()
        x2[:, :, row, col] += 1.0
        return ((mixer(x2) - y).abs().amax(1)[0] > 1e-12).nonzero().tolist()

    assert seen_by(0, 0) == [[0, 0]]
    assert seen_by(4, 4) == [[4, 4]]
    assert seen_by(2, 3) == [[r, c] for r in (1, 2, 3) for c in (1, 2, 3)]
    assert seen_by(0, 2) == [[0, 1], [0, 2], [0, 3]]
