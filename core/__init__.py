"""Reactomo core: the UI-free library behind the dashboard and the ``python -m core`` CLI.

Nothing in this package imports streamlit (a test enforces it). Arrays are ``(z, y, x)``; physical units are
explicit in argument names (``voxel_size_um``, ``time_s``).
"""

from core.errors import ReactomoError

__all__ = ["ReactomoError"]
__version__ = "0.1.0"
