"Sphinx settings for the course website: docs/build_site.py prepares the sources and runs Sphinx with these."
import sys
from pathlib import Path

# Document the package in this checkout, whichever copy the environment has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # mathml.py
import imagenette_course

project = 'imagenette_course'
copyright = 'the imagenette_course developers'
release = imagenette_course.__version__
root_doc = 'index'

extensions = ['myst_nb', 'sphinx.ext.autodoc', 'mathml']

# The notebooks' formulas, `$...$` and `$$...$$` as Jupyter renders them, drawn by the browser as MathML (mathml.py).
myst_enable_extensions = ['dollarmath', 'attrs_block']  # attrs_block: a heading's own id, `{#id}` above it
html_math_renderer = 'mathml'

# Render the outputs committed in the notebooks; running them is nbval's job (`make test`).
nb_execution_mode = 'off'
# Links to a section, such as `01_data.ipynb#quick-and-full-mode`, need anchors on the headings.
myst_heading_anchors = 6

# Docstrings are nbdev-style Markdown, where `name` means code; autodoc reads them as reStructuredText.
default_role = 'literal'
autodoc_member_order = 'bysource'
autodoc_preserve_defaults = True
add_module_names = False  # the page title already names the module

html_theme = 'furo'
html_title = f'imagenette_course {release}'
# Without an icon, every browser asks for /favicon.ico and logs the 404 as a console error.
html_favicon = 'favicon.svg'
# The notebooks themselves are the source; a second copy of each (images included) would only double the site.
html_copy_source = False
html_show_sourcelink = False


def add_parameters(app, what, name, obj, options, lines):
    "Each parameter's docment (nbdev's comment beside it in the signature) under the docstring, as `show_doc` lists them"
    if what not in ('function', 'method', 'class'): return
    from fastcore.docments import docments
    try: params = docments(obj, full=True)
    except (TypeError, OSError): return  # no Python source to read the comments from
    rows = [f':param {k}: {p["docment"]}' for k, p in params.items() if k != 'return' and p.get('docment')]
    if rows: lines += ['', *rows]


def setup(app):
    app.connect('autodoc-process-docstring', add_parameters)
