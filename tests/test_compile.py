"""torch.compile(fullgraph=True) of a model that uses lstm_fused.LSTM, compared with eager."""
import pytest
import torch
from torch import nn

import lstm_fused


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.lstm = lstm_fused.LSTM(8, 12, num_layers=2, bidirectional=True, batch_first=True,
                                    backend="cpu")
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
