"""Sphinx configuration: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.

The pages are Markdown (MyST); the API reference is generated from the docstrings (numpydoc
style, through napoleon).  No intersphinx: the build runs offline.  The package must be
importable (``pip install -e '.[docs]'``, as ``nox -s docs`` does).
"""

import threadensemble

project = "threadensemble"
author = "threadensemble developers"
copyright = "threadensemble developers"
release = threadensemble.__version__
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
root_doc = "index"

myst_heading_anchors = 3  # links to sections: [resume](user-guide.md#resuming-a-run)

napoleon_google_docstring = False
napoleon_numpy_docstring = True
default_role = "py:obj"  # `simulate_ensemble` in a docstring links to its entry
autodoc_member_order = "bysource"
autodoc_typehints = "signature"

html_theme = "alabaster"
html_title = f"threadensemble {release}"
