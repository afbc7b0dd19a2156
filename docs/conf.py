"""Sphinx configuration: the user guide (Markdown, MyST) and the API reference from the
docstrings (autodoc + numpydoc). Build: ``python -m sphinx -W -b html docs docs/_build``
(needs ``pip install -e ".[docs]"``: autodoc imports the built package)."""
import fastmomentum

project = "fastmomentum"
author = "fastmomentum developers"
copyright = "2026, fastmomentum developers"
release = version = fastmomentum.__version__

extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "demos"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"         # the signatures come from the runtime objects
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_static_path = []
