"Sphinx settings for the course website: docs/build_site.py prepares the sources and runs Sphinx with these."
import inspect, sys
from pathlib import Path

from docutils import nodes

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
# A method without a docstring of its own would show its base class's (torch's `forward`, fastai's `create_batches`),
# which describes the base's contract, not what the course's method does.
autodoc_inherit_docstrings = False
# Curly quotes and dashes would change code quoted in docstrings: `--presize` would start with an en dash.
smartquotes = False
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
    # args_kwargs: without it, fastcore skips the comment on a `**name` line, such as `run_config`'s `**overrides`
    try: params = docments(obj, full=True, args_kwargs=True)
    except (TypeError, OSError): return  # no Python source to read the comments from
    rows = [f':param {k}: {p["docment"]}' for k, p in params.items() if k != 'return' and p.get('docment')]
    if rows: lines += ['', *rows]


def drop_type_docstring(app, what, name, obj, options, lines):
    "A constant has no docstring of its own: autodoc would show its type's (`dict`'s, `int`'s) in its place"
    if what == 'data' and '\n'.join(lines).strip() == inspect.getdoc(type(obj)): lines.clear()


def callback_events_only(obj):
    "Whether `obj` is a class whose signature is only the event keywords that fastai's `Callback.__init__` takes"
    from fastai.callback.core import Callback
    if not (isinstance(obj, type) and issubclass(obj, Callback)): return False
    params = inspect.signature(obj).parameters.values()
    return bool(params) and all(p.kind is p.KEYWORD_ONLY and p.name in Callback._methods for p in params)


def hide_callback_events(app, what, name, obj, options, signature, return_annotation):
    "A Callback without an `__init__` of its own takes no arguments of the course's: `()`, not fastai's event keywords"
    if what == 'class' and callback_events_only(obj): return '()', return_annotation


def dash_field_separators(app, doctree):
    "Sphinx writes ` -- ` between a parameter and its docment, for smart quotes to make an en dash: make it here"
    for text in list(doctree.findall(lambda node: isinstance(node, nodes.Text) and node.astext() == ' -- ')):
        text.parent.replace(text, nodes.Text(' \u2013 '))


def setup(app):
    app.connect('autodoc-process-docstring', add_parameters)
    app.connect('autodoc-process-docstring', drop_type_docstring)
    app.connect('autodoc-process-signature', hide_callback_events)
    app.connect('doctree-read', dash_field_separators)
