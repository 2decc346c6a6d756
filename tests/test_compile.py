"""torch.compile(fullgraph=True) of a model that uses lstm_fused.LSTM, compared with eager."""

import pytest
import torch
from torch import nn

import lstm_fused


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.lstm = lstm_fused.LSTM(
            8, 12, num_layers=2, bidirectional=True, batch_first=True, backend="cpu"
        )
        self.head = nn.Linear(24, 5)

    def forward(self, tokens):
        y, (h, c) = self.lstm(self.emb(tokens))
        return self.head(y), h, c


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    torch.manual_seed(0)
    model = Tagger()
    tokens = torch.randint(0, 20, (3, 7))
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    out_e = model(tokens)
    grads_e = torch.autograd.grad(sum(o.sum() for o in out_e), list(model.parameters()))
    out_c = compiled(tokens)
    grads_c = torch.autograd.grad(sum(o.sum() for o in out_c), list(model.parameters()))
    for a, e in zip(out_c, out_e):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)
    for a, e in zip(grads_c, grads_e):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


def test_compile_self_attention_with_dropout_in_training():
    """The dropout seed is drawn as a tensor, so fullgraph compiles and the draw is traced, not
    baked in: with aot_eager (eager's random stream) the compiled module equals eager for the
    same torch seed, gradients included, and another seed gives another mask."""
    torch.manual_seed(0)
    module = lstm_fused.MultiheadSelfAttention(8, 2, dropout=0.3, backend="cpu").train()
    x = torch.randn(5, 3, 8, requires_grad=True)
    lengths = torch.tensor([5, 2, 0])
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    params = [x] + list(module.parameters())
    torch.manual_seed(1)
    out_e = module(x, lengths)[0]
    grads_e = torch.autograd.grad(out_e.sum(), params)
    torch.manual_seed(1)
    out_c = compiled(x, lengths)[0]
    grads_c = torch.autograd.grad(out_c.sum(), params)
    torch.testing.assert_close(out_c, out_e)
    for a, e in zip(grads_c, grads_e):
        torch.testing.assert_close(a, e)
    torch.manual_seed(2)
    assert not torch.allclose(compiled(x, lengths)[0], out_c)
