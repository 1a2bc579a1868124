"""The interactive lab in the browser: ``optimlab serve``.

A FastAPI server (:mod:`.app`) runs the lab's batched engine for a static page
(``static/index.html``) that draws, with plotly.js, the landscape as a contour and a 3-D surface,
the trajectories step by step, the loss against the step, and each trajectory's metrics. The
page's state lives in its URL hash, so a link reproduces what the reader saw.
"""

from .._lazy import lazy_attributes

__getattr__, __dir__ = lazy_attributes(__name__, {"create_app": ".app", "Limits": ".schemas"})
__all__ = ["create_app", "Limits"]
