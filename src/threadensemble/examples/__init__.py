"""Example models, each a factory returning a `threadensemble.ModelSpec`.

Run one by its short name, ``python -m threadensemble run fire -n 4 -o out``, or in full,
``python -m threadensemble run threadensemble.examples.fire:build``; ``-p NAME=VALUE`` sets a
factory parameter.

========  ==============================================================================
weather   fitted multisite weather generator (numpy, per-thread buffers)
fire      fire spread over thousands of pure-Python cells (unpicklable: weak references,
          callbacks)
mobility  agents' trips by exploration and preferential return (a closure over dicts)
levelset  level-set fire front on large float32 layers, read by every thread uncopied
etas      earthquake aftershock catalogues (branching process, ragged ``event`` dimension)
========  ==============================================================================
"""

EXAMPLES = {
    "weather": "threadensemble.examples.weather:build",
    "fire": "threadensemble.examples.fire:build",
    "mobility": "threadensemble.examples.mobility:build",
    "levelset": "threadensemble.examples.levelset:build",
    "etas": "threadensemble.examples.etas:build",
}
"""Short name -> ``MODULE:FACTORY`` of every example, as the command line accepts them."""

__all__ = ["EXAMPLES"]
