"""Example models, each a factory returning a `threadensemble.ModelSpec`.

Run one with ``python -m threadensemble run threadensemble.examples.weather:build``.
"""

EXAMPLES = {
    "weather": "threadensemble.examples.weather:build",
}
"""Short name -> ``MODULE:FACTORY`` of every example, as the command line accepts them."""

__all__ = ["EXAMPLES"]
