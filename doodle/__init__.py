"""doodle: learn to recognise Google Quick, Draw! doodles with a hand-written numpy MLP.

Data flows download -> strokes -> raster -> dataset (cache) -> nn + optim -> train -> checkpoint
-> evaluate / predict; `cli.py` is a thin typer layer on top.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "rasterize", "rasterize_batch"]


def __getattr__(name):
    # Lazy, so `doodle --help` and `doodle predict` do not pay for modules they do not use.
    if name == "rasterize":
        from doodle.raster import rasterize

        return rasterize
    if name == "rasterize_batch":
        from doodle.rasterpool import rasterize_batch

        return rasterize_batch
    raise AttributeError(f"module 'doodle' has no attribute {name!r}")
