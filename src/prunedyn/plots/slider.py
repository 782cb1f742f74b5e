"""A slider over pre-rendered figures that works in static HTML, with no kernel.

Live ipywidgets need a running kernel and, in the static book, a widget
manager fetched from a CDN. This slider needs neither: every frame is a PNG
embedded as a data URI, and a range input shows one frame at a time through
an inline event handler, so it works in the built book offline and in any
browser. (In a live notebook, chapters also offer ipywidgets controls that
recompute.)
"""
from __future__ import annotations

import base64
import html
import io
import uuid
from typing import Sequence, Tuple, Union

import matplotlib.pyplot as plt

Frame = Tuple[str, Union[bytes, "plt.Figure"]]

_ONINPUT = (
    "var r=this.closest('.prunedyn-slider'),f=r.querySelectorAll('.pds-frame'),i=+this.value;"
    "f.forEach(function(im,k){im.style.display=(k===i)?'block':'none';});"
    "r.querySelector('.pds-value').textContent=f[i].getAttribute('data-label');"
)


def figure_png(fig, dpi: int = 90) -> bytes:
    """The figure as PNG bytes; the figure is closed so notebooks do not show it twice."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


class StaticSlider:
    """Frames ``[(label, figure or PNG bytes), ...]`` behind one range input.

    Displayed in a notebook through ``_repr_html_``; ``html()`` gives the markup.
    """

    def __init__(self, frames: Sequence[Frame], name: str, start: int = 0, dpi: int = 90):
        if not frames:
            raise ValueError("a slider needs at least one frame")
        self.labels = [str(label) for label, _ in frames]
        self.pngs = [f if isinstance(f, (bytes, bytearray)) else figure_png(f, dpi) for _, f in frames]
        self.name = name
        self.start = max(0, min(start, len(frames) - 1))
        self.uid = uuid.uuid4().hex[:8]

    def html(self) -> str:
        imgs = []
        for k, (label, png) in enumerate(zip(self.labels, self.pngs)):
            data = base64.b64encode(png).decode()
            display = "block" if k == self.start else "none"
            imgs.append(
                f'<img class="pds-frame" data-label="{html.escape(label)}" alt="{html.escape(self.name)}: {html.escape(label)}" '
                f'style="display:{display};max-width:100%" src="data:image/png;base64,{data}">'
            )
        return (
            f'<div class="prunedyn-slider" id="pds-{self.uid}" style="margin:0.5em 0">'
            f'<label style="font-family:sans-serif;font-size:0.9em">{html.escape(self.name)}: '
            f'<input class="pds-input" type="range" min="0" max="{len(self.pngs) - 1}" step="1" '
            f'value="{self.start}" oninput="{_ONINPUT}" style="vertical-align:middle;width:16em"> '
            f'<b class="pds-value">{html.escape(self.labels[self.start])}</b></label>'
            f'<div class="pds-frames">{"".join(imgs)}</div></div>'
        )

    def _repr_html_(self) -> str:
        return self.html()


def static_slider(frames: Sequence[Frame], name: str, start: int = 0, dpi: int = 90) -> StaticSlider:
    """Shorthand for :class:`StaticSlider`."""
    return StaticSlider(frames, name, start, dpi)
