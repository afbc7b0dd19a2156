"""Figure helpers shared by the demos; matplotlib is imported only when a plot is drawn.

The demos build a ``matplotlib.figure.Figure`` directly instead of going through pyplot,
so no GUI backend is ever selected and no global pyplot state is touched: ``savefig`` on a
bare Figure renders with Agg.
"""
from ..benchcases import MATPLOTLIB_HINT

#: Every demo figure is saved at this resolution (pixels per inch).
DPI = 100

#: One colour per method: full-gradient descent without momentum, momentum, Nesterov,
#: mini-batch SGD.
COLORS = {"plain": "#d62728", "momentum": "#1f77b4", "nesterov": "#2ca02c",
          "mini-batch": "#ff7f0e"}

INSTALL_HINT = (f"matplotlib is not installed, so no plot was drawn; for the plots: "
                f"{MATPLOTLIB_HINT}")


def new_figure(width, height, ncols, **subplot_kw):
    """A ``width`` x ``height`` inch figure with ``ncols`` side-by-side axes.

    Raises ImportError (with the install hint) when matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols, **subplot_kw)
    return fig, axes


def style(ax, title, xlabel, ylabel):
    """Title, axis labels and a light grid: the common look of every panel."""
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def save(fig, path):
    """Write ``fig`` as a PNG at :data:`DPI` (fixed size: no tight bounding box)."""
    fig.savefig(path, dpi=DPI, format="png")
