"""doodle: learn to recognise Google Quick, Draw! doodles with a hand-written numpy MLP.

Data flows download -> strokes -> raster -> dataset (cache) -> nn + optim -> train -> checkpoint
-> evaluate / predict; `cli.py` is a thin typer layer on top.
"""

__version__ = "0.1.0"

from doodle.raster import rasterize, rasterize_batch  # noqa: E402

__all__ = ["__version__", "rasterize", "rasterize_batch"]
