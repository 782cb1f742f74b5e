"""A slider over pre-rendered figures that works in static HTML, with no kernel.

Live ipywidgets need a running kernel and, in the static book, a widget
manager fetched from a CDN. This slider needs neither: every frame is a PNG
embedded as a data URI, and a range input shows one frame at a time through
an inline event handler, so it works in the built book offline and in any
browser. (In a live notebook, chapters also offer ipywidgets controls that
recompute.)

Frames are rendered at ``dpi`` (default :data:`DEFAULT_DPI`), never below
:data:`MIN_DPI`: a lower value, as older chapters pass, is raised to the floor so
that axis labels stay legible. Each frame is shown at its natural size, shrunk
to the page's width when wider (``max-width: 100%``).
"""
from __future__ import annotations

import base64
import html
import io
import uuid
from typing import Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt

Frame = Tuple[str, Union[bytes, "plt.Figure"]]

#: Resolution of the frames unless a caller asks for more.
DEFAULT_DPI = 120
#: Lowest resolution a frame is rendered at; lower requests are raised to it.
MIN_DPI = 100

_ONINPUT = (
    "var r=this.closest('.prunedyn-slider'),f=r.querySelectorAll('.pds-frame'),i=+this.value;"
    "f.forEach(function(im,k){im.style.display=(k===i)?'block':'none';});"
    "r.querySelector('.pds-value').textContent=f[i].getAttribute('data-label');"
)


def legible_dpi(dpi: Optional[float]) -> float:
    """``dpi`` raised to at least :data:`MIN_DPI`; ``None`` gives :data:`DEFAULT_DPI`."""
    return DEFAULT_DPI if dpi is None else max(float(dpi), MIN_DPI)


def figure_png(fig, dpi: Optional[float] = DEFAULT_DPI) -> bytes:
    """The figure as PNG bytes at :func:`legible_dpi` ``(dpi)``; the figure is closed so notebooks do not show it twice."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=legible_dpi(dpi), bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


class StaticSlider:
    """Frames ``[(label, figure or PNG bytes), ...]`` behind one range input.

    Figures are rendered at :func:`legible_dpi` ``(dpi)`` (PNG bytes are used as
    given). Displayed in a notebook through ``_repr_html_``; ``html()`` gives the markup.
    """

    def __init__(self, frames: Sequence[Frame], name: str, start: int = 0, dpi: Optional[float] = DEFAULT_DPI):
        if not frames:
            raise ValueError("a slider needs at least one frame")
        self.labels = [str(label) for label, _ in frames]
        self.dpi = legible_dpi(dpi)
        self.pngs = [f if isinstance(f, (bytes, bytearray)) else figure_png(f, self.dpi) for _, f in frames]
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
                f'style="display:{display};width:auto;max-width:100%;height:auto" src="data:image/png;base64,{data}">'
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


def static_slider(frames: Sequence[Frame], name: str, start: int = 0, dpi: Optional[float] = DEFAULT_DPI) -> StaticSlider:
    """Shorthand for :class:`StaticSlider`."""
    return StaticSlider(frames, name, start, dpi)
