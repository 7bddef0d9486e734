"""Interactive figures that keep working in the static HTML book.

Python callbacks do not run in a published page, but links made in the browser
(``ipywidgets.jslink``) do. So an interactive figure here is a set of frames
rendered ahead of time, stacked on top of each other, with a slider linked on
the client side to which frame is visible.
"""
from __future__ import annotations

import io
from typing import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt

__all__ = ["figure_to_png", "frame_slider"]


def figure_to_png(figure, dpi: int = 80) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (so it is not shown twice)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def frame_slider(frames: Sequence[bytes], description: str = "frame", start: int = 0) -> widgets.VBox:
    """A slider over pre-rendered PNG ``frames``, linked in the browser.

    Moving the slider shows frame ``i``; this works in Jupyter and in the
    exported HTML alike, because the link lives in JavaScript.
    """
    if not frames:
        raise ValueError("frame_slider needs at least one frame; render some with figure_to_png")
    if not 0 <= start < len(frames):
        raise ValueError(f"start={start} is outside the {len(frames)} frames")
    images = [widgets.Image(value=png, format="png") for png in frames]
    stack = widgets.Stack(images, selected_index=start)
    slider = widgets.IntSlider(
        value=start, min=0, max=len(frames) - 1, step=1, description=description,
        continuous_update=True, style={"description_width": "initial"},
    )
    widgets.jslink((slider, "value"), (stack, "selected_index"))
    return widgets.VBox([slider, stack])
