"""Interactive panels for a live kernel (ipywidgets); the slides show static figures instead."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt


def widget_panel(draw: Callable, **controls):
    """Sliders (ipywidgets) that redraw `draw(**values) -> Figure` on every change.

    The figure goes into an Output widget through its `outputs` trait, not by capturing the cell's output:
    capturing makes headless runners (nbclient, `nbconvert --execute`) send comm messages on the shell
    channel while waiting for the cell's reply, which can stall them until their timeout
    (jupyter/nbclient#312)."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()

    def redraw(_change=None):
        fig = draw(**{name: control.value for name, control in controls.items()})
        plt.close(fig)  # shown once, through the Output widget
        out.outputs = ()
        out.append_display_data(fig)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([widgets.HBox(list(controls.values())[:3]), widgets.HBox(list(controls.values())[3:]), out])
    display(panel)
    return panel
