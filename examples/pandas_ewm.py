"""From pandas' ``df.ewm(...).mean()`` to fastmomentum.ewm_mean: same numbers, same frame.

ewm_mean takes the frame's values (a 2-D array: every column a series, as pandas does) and
pandas' arguments (com/span/halflife/alpha, adjust, ignore_na, min_periods); wrap the result
in a DataFrame with the same index and columns.

Run: python examples/pandas_ewm.py   (needs pandas)
"""
from __future__ import annotations

import numpy as np
import pandas as pd

import fastmomentum as fm


def make_prices(days: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Random-walk prices of three tickers, with a few missing values."""
    rng = np.random.default_rng(seed)
    prices = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal((days, 3)), axis=0))
    prices[rng.integers(0, days, 50), rng.integers(0, 3, 50)] = np.nan
    return pd.DataFrame(prices, columns=["AAA", "BBB", "CCC"],
                        index=pd.date_range("2000-01-03", periods=days, freq="B"))


def ewm_frame(frame: pd.DataFrame, *, span: float | None = None, halflife: float | None = None,
              alpha: float | None = None, adjust: bool = True,
              ignore_na: bool = False) -> pd.DataFrame:
    """``frame.ewm(...).mean()`` computed by fastmomentum (the same arguments)."""
    values = fm.ewm_mean(frame.to_numpy(np.float64), span=span, halflife=halflife, alpha=alpha,
                         adjust=adjust, ignore_na=ignore_na)
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def relative_difference(ours: pd.DataFrame, theirs: pd.DataFrame) -> float:
    """The largest ``|ours - theirs| / |theirs|`` (NaN where both are NaN is no difference)."""
    a, b = ours.to_numpy(), theirs.to_numpy()
    assert (np.isnan(a) == np.isnan(b)).all()
    return float(np.nanmax(np.abs(a - b) / np.abs(b)))


def main() -> None:
    prices = make_prices()
    for label, ours, theirs in [
            ("span=20", ewm_frame(prices, span=20), prices.ewm(span=20).mean()),
            ("halflife=10, adjust=False", ewm_frame(prices, halflife=10, adjust=False),
             prices.ewm(halflife=10, adjust=False).mean()),
            ("alpha=0.05, ignore_na=True", ewm_frame(prices, alpha=0.05, ignore_na=True),
             prices.ewm(alpha=0.05, ignore_na=True).mean())]:
        print(f"ewm({label}): largest relative difference from pandas "
              f"{relative_difference(ours, theirs):.1e}")
    print(ewm_frame(prices, span=20).tail(3))


if __name__ == "__main__":
    main()
