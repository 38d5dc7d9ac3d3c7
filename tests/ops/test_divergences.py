"""GKD divergences: worked example, limits, symmetry, gradients, masks, top-k, chunking, memory, modes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from seedrl.ops.divergences import TopKTeacher, token_divergence

T = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
S = torch.tensor([0.4, 0.4, 0.2], dtype=torch.float64)


def _one(p, q, **kw):
    """Divergence of single distributions given as probabilities."""
    return float(token_divergence(q.log()[None, None], p.log()[None, None], **kw))


def _kl(p, q):
    return float((p * (p / q).log()).sum())


def _rest(lp, idx):
    """log of the mass outside ``idx`` (-inf when there is none)."""
    return torch.logsumexp(lp.scatter(-1, idx, float("-inf")), -1)


logits = st.lists(st.floats(-4, 4), min_size=5, max_size=5).map(lambda v: torch.tensor(v, dtype=torch.float64))


def test_worked_example_of_the_reference_notes():
    assert _one(T, S, kind="forward_kl") == pytest.approx(0.18379, abs=5e-6)
    assert _one(T, S, kind="reverse_kl") == pytest.approx(0.19204, abs=5e-6)
    assert _one(T, S, kind="jsd", beta=0.5) == pytest.approx(0.04620, abs=5e-6)
    # and the general closed form at another beta, M mixed in probability space
    m = 0.9 * T + 0.1 * S
    assert _one(T, S, kind="jsd", beta=0.9) == pytest.approx(0.9 * _kl(T, m) + 0.1 * _kl(S, m), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(logits, logits)
def test_jsd_limits_symmetry_bounds(zt, zs):
    p, q = zt.softmax(-1), zs.softmax(-1)
    fwd, rev = _one(p, q, kind="forward_kl"), _one(p, q, kind="reverse_kl")
    assert fwd == pytest.approx(_kl(p, q), rel=1e-9, abs=1e-12)
    assert rev == pytest.approx(_kl(q, p), rel=1e-9, abs=1e-12)
    eps = 1e-7
    assert _one(p, q, kind="jsd", beta=eps) / eps == pytest.approx(fwd, rel=1e-3, abs=1e-8)
    assert _one(p, q, kind="jsd", beta=1 - eps) / eps == pytest.approx(rev, rel=1e-3, abs=1e-8)
    half = _one(p, q, kind="jsd", beta=0.5)
    assert half == pytest.approx(_one(q, p, kind="jsd", beta=0.5), rel=1e-12, abs=1e-15)
    assert -1e-12 <= half <= math.log(2)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert abs(_one(p, p, kind=kind)) < 1e-12


def test_temperature_tempers_both_distributions():
    zt, zs = torch.randn(1, 1, 7, dtype=torch.float64), torch.randn(1, 1, 7, dtype=torch.float64)
    got = token_divergence(zs, zt, kind="forward_kl", temperature=2.0)
    assert float(got) == pytest.approx(_kl((zt / 2).softmax(-1).flatten(), (zs / 2).softmax(-1).flatten()), rel=1e-12)


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.1), ("jsd", 0.9)])
def test_gradients_match_finite_differences(kind, beta):
    torch.manual_seed(0)
    zs = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    zt = torch.randn(2, 3, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda z: token_divergence(z, zt, kind=kind, beta=beta, mask=mask, reduction="sequence", chunk_tokens=2), (zs,))
    vals, idx = zt.log_softmax(-1).topk(3, -1)
    rest = torch.log1p(-vals.exp().sum(-1))
    top = TopKTeacher(vals, idx, rest)
    assert torch.autograd.gradcheck(lambda z: token_divergence(z, top, kind=kind, beta=beta, mask=mask), (zs,))


def test_masked_positions_change_nothing_and_reductions():
    torch.manual_seed(1)
    zs, zt = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    per = token_divergence(zs, zt, mask=mask, reduction="none")
    zs2, zt2 = zs.clone(), zt.clone()
    zs2[~mask] = torch.randn(int((~mask).sum()), 9) * 50  # garbage where masked
    zt2[~mask] = 0.0
    assert torch.equal(token_divergence(zs2, zt2, mask=mask, reduction="none"), per)
    assert (per[~mask] == 0).all() and (per[mask] > 0).all()
    seq = token_divergence(zs, zt, mask=mask, reduction="sequence")
    torch.testing.assert_close(seq, torch.stack([per[0, :3].mean(), per[1, :2].mean()]))
    torch.testing.assert_close(token_divergence(zs, zt, mask=mask), per[mask].mean())
    # the gradient does not reach masked positions
    z = zs.clone().requires_grad_()
    token_divergence(z, zt, mask=mask).backward()
    assert (z.grad[~mask] == 0).all() and (z.grad[mask].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_topk_teacher_exact_at_full_vocab_and_bounded_below_it(kind):
    torch.manual_seed(2)
    V = 12
    zs, zt = torch.randn(3, 5, V, dtype=torch.float64), torch.randn(3, 5, V, dtype=torch.float64) * 2
    full = token_divergence(zs, zt, kind=kind, reduction="none")
    lp = zt.log_softmax(-1)
    for k in (V, 8, 4, 1):
        vals, idx = lp.topk(k, -1)
        rest = _rest(lp, idx)
        got = token_divergence(zs, TopKTeacher(vals, idx, rest), kind=kind, reduction="none")
        if k == V:
            torch.testing.assert_close(got, full)
        else:  # data processing: bucketing never increases a divergence
            assert (got <= full + 1e-12).all()
            assert (got >= 0).all()
    # with a teacher whose tail is tiny the gap is tiny
    sharp = zt * 10
    vals, idx = sharp.log_softmax(-1).topk(6, -1)
    tail = _rest(sharp.log_softmax(-1), idx)
    assert tail.exp().max() < 1e-6
    got = token_divergence(zs, TopKTeacher(vals, idx, tail), kind=kind, reduction="none")
    ref = token_divergence(zs, sharp, kind=kind, reduction="none")
    assert kind == "reverse_kl" or (ref - got).abs().max() < 1e-4


@pytest.mark.parametrize("topk", [False, True])
def test_chunked_equals_unchunked(topk):
    torch.manual_seed(3)
    zs, zt = torch.randn(3, 7, 11, dtype=torch.float64, requires_grad=True), torch.randn(3, 7, 11, dtype=torch.float64)
    if topk:
        vals, idx = zt.log_softmax(-1).topk(4, -1)
        zt = TopKTeacher(vals, idx, torch.log1p(-vals.exp().sum(-1)))
    grads = []
    for chunk in (1, 5, 1000):
        zs.grad = None
        out = token_divergence(zs, zt, kind="jsd", beta=0.3, chunk_tokens=chunk, reduction="none")
        out.sum().backward()
        grads.append((out.detach(), zs.grad.clone()))
    for out, grad in grads[1:]:
        torch.testing.assert_close(out, grads[0][0])
        torch.testing.assert_close(grad, grads[0][1])


def test_autograd_keeps_no_vocab_sized_intermediates():
    """Under autograd only views of the inputs are saved (chunks are recomputed in backward):
    the saved tensors that are not the logits' own storage are far below one [tokens, V]."""
    B, L, V = 4, 16, 500
    zs = torch.randn(B, L, V, requires_grad=True)
    zt = torch.randn(B, L, V)
    own = {zs.untyped_storage().data_ptr(), zt.untyped_storage().data_ptr()}
    extra = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in own:
            extra.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = token_divergence(zs, zt, chunk_tokens=8)
    assert sum(extra) < B * L * V / 4, sum(extra)
    out.backward()
    assert torch.isfinite(zs.grad).all()


def test_bad_arguments_name_the_field():
    z = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="beta=1.0"):
        token_divergence(z, z, kind="jsd", beta=1.0)
    with pytest.raises(ValueError, match="kind='kl'"):
        token_divergence(z, z, kind="kl")
    with pytest.raises(ValueError, match="teacher must have shape"):
        token_divergence(z, torch.zeros(1, 2, 4))


def _fit(kind, beta=0.5, steps=300):
    """A one-bump student (softmax of a parabola: mean mu, width sigma), started nearer the
    bigger mode, fitted to a two-bump teacher (bumps of width sqrt(2) at 10 and 30)."""
    v = torch.arange(41, dtype=torch.float64)
    bumps = [math.log(0.55) - (v - 10) ** 2 / 4, math.log(0.45) - (v - 30) ** 2 / 4]
    teacher = torch.logsumexp(torch.stack(bumps), 0).log_softmax(-1)
    mu = torch.tensor(14.0, dtype=torch.float64, requires_grad=True)
    log_sigma = torch.tensor(math.log(3.0), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([mu, log_sigma], lr=0.1)
    for _ in range(steps):
        z = -((v - mu) ** 2) / (2 * log_sigma.exp() ** 2)
        loss = token_divergence(z[None, None], teacher[None, None], kind=kind, beta=beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return z.detach().softmax(-1), v, mu.item(), log_sigma.exp().item()


def test_mode_seeking_versus_mass_covering():
    near = lambda q, v, c: float(q[(v - c).abs() <= 4].sum())  # noqa: E731
    for kind, beta in (("reverse_kl", 0.5), ("jsd", 0.9)):
        q, v, mu, sigma = _fit(kind, beta)
        # the known answer: exactly the teacher's nearer bump, nothing on the other
        assert mu == pytest.approx(10, abs=1e-3) and sigma == pytest.approx(math.sqrt(2), abs=1e-3), kind
        assert near(q, v, 10) > 0.99 and near(q, v, 30) < 1e-6 and near(q, v, 20) < 1e-3
    q, v, mu, sigma = _fit("forward_kl")
    assert sigma > 10  # one bump as wide as both modes together ...
    assert 0.15 < near(q, v, 10) < 0.5 and 0.15 < near(q, v, 30) < 0.5
    assert near(q, v, 20) > 0.2  # ... and mass in the valley the teacher leaves empty


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.1), ("jsd", 0.5), ("jsd", 0.9)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_closed_form_gradient_equals_autograd_of_the_formula(kind, beta, temperature):
    """The fast path (full-vocabulary teacher without gradient: closed-form backward) gives the
    value and gradient that autograd computes through the plain formula, teacher zeros included."""
    torch.manual_seed(5)
    zs, zt = torch.randn(3, 6, 13, dtype=torch.float64) * 2, torch.randn(3, 6, 13, dtype=torch.float64) * 2
    zt[0, 0, :4] = float("-inf")  # tokens the teacher never emits
    if kind == "reverse_kl":
        zt[0, 0, :4] = -40.0  # reverse KL is infinite there
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[2, 4:] = False
    w = torch.rand(3, 6, dtype=torch.float64)  # a non-uniform upstream gradient
    fast = zs.clone().requires_grad_()
    out = token_divergence(fast, zt, kind=kind, beta=beta, temperature=temperature, mask=mask, reduction="none",
                           chunk_tokens=5)
    (out * w).sum().backward()
    slow = zs.clone().requires_grad_()
    teacher = zt.clone().requires_grad_()  # a teacher with gradient takes the checkpointed autograd path
    ref = token_divergence(slow, teacher, kind=kind, beta=beta, temperature=temperature, mask=mask, reduction="none",
                           chunk_tokens=5)
    (ref * w).sum().backward()
    torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-10, atol=1e-12)
    assert (fast.grad[~mask] == 0).all() and fast.grad[mask].abs().sum() > 0
