"""Build the course website into `_site/` from the committed notebooks, with Sphinx and myst-nb.

The notebooks are not executed: their committed outputs are rendered. Each `nbs/[0-9]*.ipynb` is copied into
`_sphinx/src/` with nbdev plumbing removed (hidden cells, `#|` directive lines, nbval markers), named as nbdev names
its pages (`01_data.ipynb` is `data.html`, `00_index.ipynb` the home page `index.html`), so that the `Docs:` link
nbdev writes in each module's docstring and the links of `_modidx.py` find them; beside each page, its Markdown
(`data.html.md`), which is what those `Docs:` links name. One API reference page per module of the package is
generated for Sphinx autodoc.
Any Sphinx warning fails the build, so a notebook that can't be rendered stops it with a message naming the file.

Usage: python docs/build_site.py [--nbs DIR] [--out DIR]
"""
import argparse, importlib, inspect, re, shutil, sys
from functools import reduce
from pathlib import Path

import nbformat
from docutils.nodes import make_id
from fastcore.nbio import read_nb, write_nb
from nbdev.config import nbpath2html
from nbdev.process import NBProcessor, Processor
from nbdev.processors import _def_names, _want_doc, clean_magics, filter_stream_, hide_, hide_line, mk_cell
from nbdev.showdoc import MarkdownRenderer
from sphinx.cmd.build import build_main

from conf import callback_events_only

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT/'docs'
WORK = ROOT/'_sphinx'
PACKAGE = 'imagenette_course'
HOME_NB = '00_index.ipynb'


class NotebookError(Exception): "A notebook that can't be read as a valid notebook"


def notebooks(nbs_dir):
    "The course notebooks, in chapter order (by file name)"
    return sorted(Path(nbs_dir).glob('[0-9]*.ipynb'))


def page_name(nb_path):
    "The site page a notebook becomes, named as nbdev names it: without the number, so `00_index` is the home page"
    return nbpath2html(Path(nb_path).name).stem


_re_nbval = re.compile(r'^#\s*NBVAL_\w+[ \t]*\n?', re.MULTILINE)
_re_nb_link = re.compile(r'\]\((\d+[a-zA-Z0-9]*_\w+)\.ipynb')


def strip_nbval_markers(cell):
    "Drop `# NBVAL_CHECK_OUTPUT`-style lines: they tell nbval what to compare, not the reader anything"
    if cell.cell_type == 'code': cell.source = _re_nbval.sub('', cell.source)


def link_pages(cell):
    "Point markdown links at another notebook to its page's source, named by `page_name`"
    if cell.cell_type == 'markdown':
        cell.source = _re_nb_link.sub(lambda m: f']({page_name(m[1])}.ipynb', cell.source)


# Each notebook links to itself in Colab with Colab's badge image. The site shows a copy of that badge from its own
# files, so that a page draws (and `make docs-check` passes) without reaching Colab's server.
COLAB_BADGE = 'https://colab.research.google.com/assets/colab-badge.svg'
LOCAL_BADGE = 'colab-badge.svg'


def local_colab_badge(cell):
    "Point the Open in Colab badge's image at the site's own copy; the link itself still goes to Colab"
    if cell.cell_type == 'markdown': cell.source = cell.source.replace(COLAB_BADGE, LOCAL_BADGE)


def drop_empty(cell):
    "Drop code cells left with nothing to show, such as `#| default_exp` once its directive line is gone"
    if cell.cell_type == 'code' and not cell.source.strip() and not cell.get('outputs'): del cell['source']


# What fastprogress leaves in an output when nothing was shown by the end: a bar with its status line (`0.00% [0/1
# 00:00<?]`), and fastai's epoch table with no rows (`learn.tta()` draws both, then finishes without an epoch).
_re_progress_bar = re.compile(r'<progress[^>]*>\s*</progress>[^<]*')
# fastprogress's own epoch table (`text2html_table`), its header inside the one table: no other output's is dropped
_re_empty_table = re.compile(r'<table class="fastprogress">\s*(<thead>(?:(?!</?table).)*?</thead>)?\s*<tbody>\s*</tbody>'
                             r'\s*</table>', re.DOTALL)
_re_tag = re.compile(r'<[^>]+>')


def only_empty_progress(output):
    "Whether `output` is HTML that shows nothing but progress bars and epoch tables without rows"
    data = output.get('data', {})
    if 'text/html' not in data or set(data) - {'text/html', 'text/markdown', 'text/plain'}: return False
    html = _text(data['text/html'])
    emptied = _re_empty_table.sub('', _re_progress_bar.sub('', html))
    return emptied != html and not _re_tag.sub('', emptied).strip()


def drop_empty_progress(cell):
    "Drop outputs that are only an empty progress bar or epoch table: on a page they are a bar stuck at 0% or a header"
    if cell.cell_type == 'code': cell.outputs = [o for o in cell.get('outputs', []) if not only_empty_progress(o)]


_re_heading = re.compile(r'^(#{1,6}) ', re.MULTILINE)


def heading_levels(markdown):
    "The level of each heading in `markdown`, in order"
    return [len(m[1]) for m in _re_heading.finditer(re.sub(r'```.*?```', '', markdown, flags=re.DOTALL))]


def documented(link):
    "Whether `_modidx.py`'s `link` names a documented name: not private (`_x`), as nbdev chooses (dunders are)"
    return not any(part.startswith('_') and not part.startswith('__') for part in link.split('#')[1].split('.'))


def tidy_signature(signature, obj):
    "nbdev's signature of `obj` (its ```python block) as the source reads: `x=None`; a class without `def`, `->None`"
    if callback_events_only(obj): return f'```python\nclass {obj.__name__}()'  # fastai's keywords, not the course's
    # nbdev annotates a `None` default with its type, which says nothing the `=None` doesn't
    signature = signature.replace(':NoneType=None', '=None')
    if not isinstance(obj, type): return signature
    # nbdev 3 writes `def` for classes too, and a dataclass's generated `__init__` returns `None`
    return re.sub(r'\n\)->None:$', '\n):', signature.replace('```python\ndef ', '```python\nclass ', 1))


def show_doc_markdown(obj):
    "`obj` in Markdown as nbdev's `show_doc` shows it, with its signature tidied by `tidy_signature`"
    signature, rest = MarkdownRenderer(obj)._repr_markdown_().split('\n```', 1)  # at the signature's closing fence
    return f'{tidy_signature(signature, obj)}\n```{rest}'


def export_doc(module, name, modidx, level):
    "`name` of `module` in Markdown as nbdev's `show_doc` shows it, under a heading of `level`; anchors for its methods"
    obj = reduce(getattr, name.split('.'), module)
    body = show_doc_markdown(obj)
    prefix = f'{module.__name__}.{name}.'
    methods = [link.split('#')[1] for sym, (link, _) in modidx['syms'].get(module.__name__, {}).items()
               if sym.startswith(prefix) and documented(link)]
    # The heading's own anchor is `name` in lower case, as in `_modidx`; a method's link lands on its class.
    return '\n'.join([f'{"#" * level} {name}', '', *[f'<span id="{m}"></span>' for m in methods], '', body])


class document_exports(Processor):
    "After each `#| export` cell, its public names documented as on an nbdev site, where `_modidx.py` links point"
    def begin(self):
        from imagenette_course._modidx import d as modidx
        cells = self.nb.cells
        exp = next((c.directives_['default_exp'] for c in cells if 'default_exp' in c.directives_), None)
        if exp is None: return
        try: module = importlib.import_module(f'{PACKAGE}.{exp.strip()}')
        except ImportError as e: raise NotebookError(f"its module can't be imported ({e}): run nbdev-export") from e
        docs, names, level = {}, set(), 1
        for i, cell in enumerate(cells):
            if cell.cell_type == 'markdown': level = ([level] + heading_levels(cell.source))[-1]
            # nbdev's own choice of what to document: its `add_show_docs` picks these cells and names
            if not _want_doc(cell): continue
            defined = _def_names(cell, set())
            docs[i] = [export_doc(module, nm, modidx, level + 1) for nm in defined]
            names |= {nm.lower() for nm in defined}
        for i in reversed(docs): cells[i+1:i+1] = [mk_cell(doc, 'markdown') for doc in docs[i]]
        title = next((c for c in cells if c.cell_type == 'markdown' and c.source.startswith('# ')), None)
        # A title such as "Mixup" would take the anchor `mixup`, which `_modidx` gives the function of that name
        if title and (slug := make_id(title.source.splitlines()[0][2:])) in names:
            title.source = f'{{#{slug}-chapter}}\n{title.source}'  # MyST's attrs_block: the title's own id


# nbdev's own processors first, so that `hide`, `hide_line` and `filter_stream` act as on nbdev's Quarto site.
# `#| export` cells stay: in this course they are the code being taught.
PROCESSORS = [document_exports, hide_, hide_line, filter_stream_, clean_magics, strip_nbval_markers, link_pages,
              local_colab_badge, drop_empty_progress, drop_empty]


def read_valid(nb_path):
    "The notebook at `nb_path`, after checking it is valid JSON and a valid notebook"
    try: nbformat.validate(nbformat.read(nb_path, as_version=4))
    except Exception as e: raise NotebookError(f"{nb_path}: not a valid notebook: {e}") from e
    return read_nb(nb_path)


def process_notebook(nb_path, dest):
    "Write `nb_path` to `dest` as readers see it: without hidden cells, directive lines and test markers"
    try: nb = NBProcessor(nb=read_valid(nb_path), procs=PROCESSORS, rm_directives=True, process=True).nb
    except NotebookError as e: raise NotebookError(f"{nb_path}: {e}") from e
    write_nb(nb, dest)
    return nb


def _text(value):
    "A notebook field's text, stored as one string or as a list of lines"
    return ''.join(value) if isinstance(value, list) else value


def output_text(output):
    "What an output shows as text: a stream, or a result's plain text when it has no richer form (a table, a figure)"
    if output.get('output_type') == 'stream': return _text(output['text'])
    data = output.get('data', {})
    return '' if set(data) - {'text/plain'} else _text(data.get('text/plain', ''))


_re_page_link = re.compile(r'\]\((\w+)\.ipynb')  # a link between pages, once `link_pages` has named them
# Lines only for the HTML page: a title's MyST id (`{#mixup-chapter}`), and the anchors `export_doc` gives methods
_re_html_only = re.compile(r'^(\{#[\w-]+\}|<span id="[^"]+"></span>)\n', re.MULTILINE)


def markdown_text(source):
    "A processed Markdown cell as plain Markdown beside its page: links to pages, Colab's own badge, no MyST-only lines"
    # The `.html.md` sits beside the page, where the site's badge copy isn't: Colab's own image always resolves.
    source = source.replace(f']({LOCAL_BADGE})', f']({COLAB_BADGE})')
    return _re_html_only.sub('', _re_page_link.sub(r'](\1.html', source))


def as_markdown(nb):
    "A processed notebook as Markdown: its text, its code, and its outputs that are text"
    parts = []
    for cell in nb.cells:
        if cell.cell_type == 'markdown': parts.append(markdown_text(cell.source))
        if cell.cell_type != 'code': continue
        if cell.source.strip(): parts.append(f"```python\n{cell.source}\n```")
        shown = ''.join(output_text(o) for o in cell.get('outputs', [])).rstrip()
        if shown: parts.append(f"```\n{shown}\n```")
    return '\n\n'.join(parts) + '\n'


def toctree(caption, pages):
    "A hidden MyST toctree: it builds the sidebar without adding a list to the page"
    return '\n'.join(['```{toctree}', ':hidden:', f':caption: {caption}', '', *pages, '```'])


def modules(package_dir):
    "The public modules of the package (not `__init__`, not nbdev's `_modidx`)"
    return sorted(p.stem for p in Path(package_dir).glob('*.py') if not p.stem.startswith('_'))


def constants(module):
    "The names in `module`'s `__all__` that aren't functions or classes: its settings and tables, such as `MODES`"
    return [n for n in module.__all__ if not (inspect.isroutine(obj := getattr(module, n)) or isinstance(obj, type))]


_re_address = re.compile(r' at 0x[0-9a-f]+')  # in a function's repr: it would change from one build to the next


def short_repr(value, width=70):
    "`value`'s repr on one line of at most `width` characters, cut with `...`"
    text = _re_address.sub('', repr(value)).replace('\n', ' ')
    return text if len(text) <= width else text[:width - 3] + '...'


def autodata(module, name):
    "An `autodata` entry for the constant `name` of `module`, its value by `short_repr`: a table's whole repr is pages"
    return f".. autodata:: {module.__name__}.{name}\n   :annotation: = {short_repr(getattr(module, name))}\n"


def write_api_page(module, dest):
    "A reference page for `module`: every name in its `__all__`, with signature and docstring, or value"
    # reStructuredText, not MyST: autodoc writes reST, which a Markdown page would show as raw text.
    name = f'{PACKAGE}.{module}'
    mod = importlib.import_module(name)
    # autodoc's `:members:` skips a constant unless a `#:` comment documents it: all are excluded there, listed here.
    consts = constants(mod)
    excluded = f"   :exclude-members: {', '.join(consts)}\n" if consts else ''
    entries = ''.join(f'\n{autodata(mod, c)}' for c in consts)
    dest.write_text(f"{name}\n{'=' * len(name)}\n\n.. automodule:: {name}\n   :members:\n{excluded}{entries}")


def write_sources(nbs_dir, src):
    "Fill the Sphinx source folder `src` (notebooks, API pages, the home page's sidebar); {page: its Markdown}"
    nbs = notebooks(nbs_dir)
    if not any(nb.name == HOME_NB for nb in nbs): raise NotebookError(f"{nbs_dir}: no {HOME_NB} for the home page")
    markdown = {page_name(p): as_markdown(process_notebook(p, src/f'{page_name(p)}.ipynb')) for p in nbs}
    shutil.copy(DOCS/LOCAL_BADGE, src/LOCAL_BADGE)
    (src/'api').mkdir()
    mods = modules(ROOT/PACKAGE)
    for mod in mods: write_api_page(mod, src/'api'/f'{mod}.rst')
    home = read_nb(src/'index.ipynb')
    home.cells.append(nbformat.v4.new_markdown_cell(
        toctree('Chapters', [page_name(p) for p in nbs if p.name != HOME_NB]) + '\n\n' +
        toctree('API reference', [f'api/{m}' for m in mods])))
    write_nb(home, src/'index.ipynb')
    return markdown


def build(nbs_dir, out):
    "Build the site from the notebooks in `nbs_dir` into `out`; the Sphinx exit status (0: no warnings)"
    # Start clean every time: a notebook that was renamed or removed must not live on as a stale page.
    for d in (WORK, out): shutil.rmtree(d, ignore_errors=True)
    src, html = WORK/'src', WORK/'html'
    src.mkdir(parents=True)
    markdown = write_sources(nbs_dir, src)
    # -W: a warning (an output that can't be rendered, a broken link, a module that won't import) fails the build.
    status = build_main(['-b', 'html', '-W', '--keep-going', '-q', '-c', str(DOCS), '-d', str(WORK/'doctrees'),
                         str(src), str(html)])
    # Built inside WORK, because myst-nb writes a `jupyter_execute/` folder beside the output folder.
    if status == 0:
        shutil.move(html, out)
        for page, text in markdown.items(): (out/f'{page}.html.md').write_text(text)
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nbs', type=Path, default=ROOT/'nbs', help='folder of the notebooks (default: nbs/)')
    parser.add_argument('--out', type=Path, default=ROOT/'_site', help='where the site goes (default: _site/)')
    args = parser.parse_args(argv)
    try: status = build(args.nbs, args.out)
    except NotebookError as e: sys.exit(f"docs build failed: {e}")
    if status: sys.exit(f"docs build failed: see the warnings above, each names its page's source in {WORK/'src'}")
    print(f"site built: {args.out.resolve()/'index.html'}")


if __name__ == '__main__': main()
