"""The blank figure and the PNG writer every report draws with (labeled folders, runs, studies, agreement).

matplotlib is imported only when a figure is made, with the Agg backend: no display and no pyplot state.
"""

from __future__ import annotations

import io as _io
from pathlib import Path

from cream_data.tables import io


def new_figure(height: float = 3.2, rows: int = 1):
    """A matplotlib Figure (no pyplot state, Agg backend) with ``rows`` stacked axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, height * rows), dpi=100, layout="constrained")
    return fig, [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]


def save_png(fig, path: Path) -> Path:
    """Render ``fig`` as PNG and write it atomically."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    io.atomic_write_bytes(path, buf.getvalue())
    return path
