"""Forecast the Mauna Loa CO2 series (shipped by statsmodels) 12 months ahead with an LSTM,
channel attention (ECA) on its features and additive attention pooling; trained side by side
with nn.LSTM and after lstm_fused.replace_lstm (examples/common.py says how).

    python -m examples.forecast [--epochs N] [--device cpu|cuda] [--backend auto] [--smoke]
                                [--plot forecast.png]

Data: the weekly CO2 record 1958-2001 (statsmodels.datasets.co2), as monthly means, missing
weeks interpolated. Each window is W months (value, and the month as sin/cos); the model
predicts the next K months as changes from the window's last value. Test: the last 20 % of the
months. Baseline: the naive seasonal forecast (each month as it was a year before).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import common

W, K, SEASON = 48, 12, 12  # window (months), horizon (months), season length


class Forecaster(nn.Module):
    """LSTM -> ECA channel attention -> additive pooling; the pooled vector and the last step's
    features -> Linear. x (B, W, 3) -> (B, K): the next K values minus the window's last one,
    in units of the series' mean yearly change."""

    def __init__(self, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(3, hidden, num_layers=layers, dropout=dropout, batch_first=True)
        self.channels = common.TorchChannelAttention(hidden)
        self.pool = common.TorchAttentionPooling(hidden, hidden // 2)
        self.head = nn.Linear(2 * hidden, K)

    def forward(self, x):
        y, _ = self.lstm(x)  # (B, W, H)
        y = self.channels(y)
        context, _ = self.pool(y)  # (B, H)
        return self.head(torch.cat([context, y[:, -1]], dim=1))


def load_series() -> torch.Tensor:
    """Monthly mean CO2 (ppm), (N,) float64, March 1958 on."""
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate()
    return torch.tensor(monthly.to_numpy(), dtype=torch.float64)


def windows(series: torch.Tensor, starts: range, mean: float, std: float, step: float):
    """Inputs (n, W, 3) float32: the values normalised by mean and std, and the month as sin
    and cos; targets (n, K): the next K values minus the window's last one, over `step`;
    for the windows whose forecast starts at the months in `starts`."""
    z = (series - mean) / std
    month = torch.arange(len(series), dtype=torch.float64) * (2 * math.pi / SEASON)
    feats = torch.stack([z, torch.sin(month), torch.cos(month)], dim=1)  # (N, 3)
    xs = torch.stack([feats[t - W : t] for t in starts])
    ys = torch.stack([(series[t : t + K] - series[t - 1]) / step for t in starts])
    return xs.float(), ys.float()


def main(argv=None) -> common.Summary:
    args = common.parser("CO2 forecast, nn.LSTM vs lstm_fused side by side", epochs=30).parse_args(
        argv
    )
    device = common.setup(args)
    series = load_series()
    first_year = 1958 + 2 / 12  # March 1958
    n_test = len(series) // 5
    split = len(series) - n_test
    if args.smoke:  # from 1970 on (training 1970-1992, test 1993-1996); a smaller model
        series, first_year = series[12 * 12 : split + 4 * 12], first_year + 12
        split = len(series) - 4 * 12
    train_part = series[:split]
    mean, std = train_part.mean().item(), train_part.std().item()
    # The scale of the targets: how far the series moves in a year (ppm), from the training part.
    step = (train_part[SEASON:] - train_part[:-SEASON]).abs().mean().item()
    train_x, train_y = windows(series, range(W, split - K + 1), mean, std, step)
    test_starts = range(split, len(series) - K + 1)
    test_x, test_y = windows(series, test_starts, mean, std, step)
    train_x, train_y, test_x, test_y = (t.to(device) for t in (train_x, train_y, test_x, test_y))
    print(
        f"CO2 monthly: {len(series)} months; {len(train_x)} training windows, "
        f"{len(test_x)} test windows; W={W}, K={K}"
    )

    torch.manual_seed(args.seed)
    hidden, batch = (32, 4) if args.smoke else (64, 32)
    model = Forecaster(hidden, layers=2, dropout=args.dropout).to(device)
    sides = common.make_sides(
        model, args.backend, lambda p: torch.optim.Adam(p, lr=2e-2 if args.smoke else 3e-3)
    )
    order = torch.Generator().manual_seed(args.seed)

    def epoch():
        perm = torch.randperm(len(train_x), generator=order).to(device)
        return [(train_x[i], train_y[i]) for i in perm.split(batch)]

    common.train(
        sides,
        [epoch] * args.epochs,
        lambda m, b: F.mse_loss(m(b[0]), b[1]),
        device,
        args.seed,
        desc="forecast",
    )

    # Test error in ppm over every test window and horizon; the baseline: y[t+h-12].
    last = series[torch.tensor(list(test_starts)) - 1].unsqueeze(1)  # (n, 1) ppm
    truth = series[torch.tensor(list(test_starts)).unsqueeze(1) + torch.arange(K)]
    forecasts = {}
    with torch.no_grad():
        for name, side in sides.items():
            side.model.eval()
            forecasts[name] = side.model(test_x).double().cpu() * step + last
            side.metric = (forecasts[name] - truth).pow(2).mean().sqrt().item()
    naive = torch.stack([series[t - SEASON : t - SEASON + K] for t in test_starts])
    naive_rmse = (naive - truth).pow(2).mean().sqrt().item()
    common.time_inference(sides, list(test_x.split(batch)), lambda m, x: m(x), device)
    summary = common.summarise(
        sides,
        "test RMSE (ppm, 12 months ahead)",
        "naive seasonal",
        naive_rmse,
        higher_is_better=False,
        log_every=max(1, len(sides[common.NN].losses) // 15),
    )
    if args.plot:

        def forecast_panel(ax):
            years = first_year + torch.arange(len(series)) / SEASON
            ax.plot(years, series, color="0.4", lw=1, label="CO2 (monthly mean)")
            for j in range(0, len(test_starts), K):
                t = test_starts[j]
                span = years[t : t + K]
                ax.plot(
                    span,
                    forecasts[common.NN][j],
                    color="C0",
                    lw=2.5,
                    alpha=0.6,
                    label=common.NN if j == 0 else None,
                )
                ax.plot(
                    span,
                    forecasts[common.FUSED][j],
                    color="C1",
                    ls="--",
                    lw=1,
                    label="lstm_fused" if j == 0 else None,
                )
            shown = series[split - 3 * SEASON :]
            ax.set(
                xlabel="year",
                ylabel="CO2 (ppm)",
                xlim=(years[split - 3 * SEASON], years[-1]),
                ylim=(shown.min() - 1, shown.max() + 1),
                title="12-month forecasts over the test years",
            )
            ax.legend()

        common.plot(args.plot, summary, "CO2 forecast: training loss (MSE)", forecast_panel)
    return summary


if __name__ == "__main__":
    main()
