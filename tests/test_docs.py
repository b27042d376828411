"The docs build's notebook processing; the whole site is built and read in Chromium by `make docs docs-check`"
import sys
from pathlib import Path

import nbformat
import pytest

DOCS = Path(__file__).resolve().parents[1]/'docs'
sys.path.insert(0, str(DOCS))
from build_site import (NotebookError, as_markdown, autodata, documented, export_doc, markdown_text,  # noqa: E402
                        notebooks, page_name, process_notebook)
from check_site import chapter, documented_names, documents, formulas, markdown_problems  # noqa: E402

NBS = DOCS.parent/'nbs'


def write_notebook(path, *cells):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nbformat.write(nb, path)
    return path


def test_plumbing_is_stripped(tmp_path):
    src = write_notebook(tmp_path/'01_demo.ipynb',
        nbformat.v4.new_code_cell('#| default_exp data'),
        nbformat.v4.new_markdown_cell('# Demo\n\n> Back [home](00_index.ipynb#chapters), on to [the CLI](94_cli.ipynb).'),
        nbformat.v4.new_code_cell('#| export\ndef get_mode(): ...'),
        nbformat.v4.new_code_cell('# NBVAL_CHECK_OUTPUT\nget_mode()'),
        nbformat.v4.new_code_cell('#| hide\nimport nbdev; nbdev.nbdev_export()'))
    text, code, doc, check = [c.source for c in process_notebook(src, tmp_path/'out.ipynb').cells]
    assert text == '# Demo\n\n> Back [home](index.ipynb#chapters), on to [the CLI](cli.ipynb).'
    assert (code, check) == ('def get_mode(): ...', 'get_mode()')
    # After an exported cell, nbdev's `show_doc` of what it defines, one heading below the section it is in
    assert doc.startswith('## get_mode\n') and 'def get_mode(\n' in doc and '*`mode` if given, else' in doc


def test_a_classs_documentation_holds_its_methods_anchors():
    "So that every `_modidx.py` link to a method lands on its class; private ones aren't documented, as on nbdev's sites"
    from imagenette_course import data
    from imagenette_course._modidx import d as modidx
    doc = export_doc(data, 'RunConfig', modidx, 3)
    assert doc.startswith('### RunConfig\n') and 'class RunConfig(' in doc
    assert '<span id="runconfig.subset"></span>' in doc and '<span id="runconfig.__str__"></span>' in doc
    assert not documented('distributed.html#gloofriendlydl._broadcast') and documented('data.html#runconfig.__str__')


def test_show_doc_signatures_read_as_the_source():
    "nbdev writes `mode=None` as `mode:NoneType=None`, a dataclass with `->None`, a Callback with fastai's keywords"
    from imagenette_course import data, distributed
    from imagenette_course._modidx import d as modidx
    assert "def get_mode(\n    mode=None, # 'quick'" in export_doc(data, 'get_mode', modidx, 2)
    run_config = export_doc(data, 'RunConfig', modidx, 2)
    assert 'NoneType' not in run_config and '\n):\n```' in run_config and '->None' not in run_config
    autotune = export_doc(distributed, 'CudnnAutotune', modidx, 2)
    assert '```python\nclass CudnnAutotune()\n```' in autotune and 'after_create' not in autotune


def test_a_callback_without_its_own_init_takes_no_arguments_in_the_reference():
    "Its signature is fastai's `Callback.__init__`: event keywords the course never passes"
    from conf import hide_callback_events
    from fastai.callback.core import Callback
    from imagenette_course.distributed import FusedOptimizer

    class Scaled(Callback):
        def __init__(self, scale=2): self.scale = scale

    assert hide_callback_events(None, 'class', 'FusedOptimizer', FusedOptimizer, {}, '(*, after_create=None)', None) \
        == ('()', None)
    assert hide_callback_events(None, 'class', 'Scaled', Scaled, {}, '(scale=2)', None) is None


def test_a_title_named_as_an_exported_function_leaves_it_the_anchor(tmp_path):
    "Chapter 6, *Mixup*, exports `mixup`: `_modidx.py`'s `mixup.html#mixup` must land on the function, not the title"
    src = write_notebook(tmp_path/'06_mixup.ipynb', nbformat.v4.new_code_cell('#| default_exp mixup'),
                         nbformat.v4.new_markdown_cell('# Mixup\n\n> A chapter'),
                         nbformat.v4.new_code_cell('#| export\ndef mixup(cfg): ...'))
    title, code, doc = [c.source for c in process_notebook(src, tmp_path/'out.ipynb').cells]
    assert title == '{#mixup-chapter}\n# Mixup\n\n> A chapter' and doc.startswith('## mixup\n')


def test_modidx_anchors_must_land_on_the_heading_that_names_them():
    page = ('<section id="mixup-chapter"><h1>Mixup<a href="#mixup-chapter">¶</a></h1></section>'
            '<section id="mixupfromscratch">\n<h3>MixUpFromScratch<a class="headerlink" href="#mixupfromscratch">¶</a></h3>\n'
            '<p><span id="mixupfromscratch.__init__"></span>\n<span id="mixupfromscratch.mixed_loss"></span></p></section>'
            '<section id="mix-inputs">\n<span id="mix_inputs"></span><h3>mix_inputs<a href="#mix-inputs">¶</a></h3></section>'
            '<section id="mixup">\n<span id="mixup-1"></span><h3>mixup<a href="#mixup">¶</a></h3></section>')
    assert all(documents(*link, page) for link in [('mixup', 'mixup'), ('mix_inputs', 'mix_inputs'),
               ('mixupfromscratch', 'MixUpFromScratch'), ('mixupfromscratch.mixed_loss', 'MixUpFromScratch.mixed_loss')])
    title_first = page.replace('id="mixup-chapter"', 'id="mixup"').replace('<section id="mixup">', '<section id="id1">')
    assert not documents('mixup', 'mixup', title_first)  # the anchor exists, on the chapter's title
    assert not documents('mixupfromscratch.before_fit', 'MixUpFromScratch.before_fit', page)


def test_a_notebook_whose_module_is_missing_names_itself(tmp_path):
    src = write_notebook(tmp_path/'07_gone.ipynb', nbformat.v4.new_code_cell('#| default_exp gone'),
                         nbformat.v4.new_code_cell('#| export\ndef f(): ...'))
    with pytest.raises(NotebookError, match="07_gone.ipynb: its module can't be imported.*run nbdev-export"):
        process_notebook(src, tmp_path/'out.ipynb')


def test_invalid_notebook_fails_naming_it(tmp_path):
    src = tmp_path/'05_broken.ipynb'
    src.write_text('{"cells": [')
    with pytest.raises(NotebookError, match='05_broken.ipynb'): process_notebook(src, tmp_path/'out.ipynb')


def test_home_page_then_chapters_by_file_name():
    "Named as nbdev names them, so that the `Docs:` links nbdev writes into the package find them"
    assert [page_name(p) for p in notebooks(NBS)][:3] == ['index', 'data', 'baseline']
    assert page_name(NBS/'92a_fast_data.ipynb') == 'fast_data'


def test_chapter_titles_and_api_names():
    assert chapter(NBS/'01_data.ipynb').title.startswith('Data')
    assert {'get_dls', 'RunConfig', 'MODES'} <= set(documented_names(DOCS.parent/'imagenette_course'/'data.py'))
    assert {'MODE_NAMES', 'NOISE_CHOICES'} <= set(documented_names(DOCS.parent/'imagenette_course'/'cli.py'))


def test_a_constants_reference_entry_shows_its_value_short():
    "`RECIPES`' whole repr is a page long, and its functions' addresses would change with each build"
    from imagenette_course import recipes, sota
    assert autodata(sota, 'MIXUP_MIN_EPOCHS').endswith('sota.MIXUP_MIN_EPOCHS\n   :annotation: = 80\n')
    value = autodata(recipes, 'RECIPES').splitlines()[1].removeprefix('   :annotation: = ')
    assert len(value) == 70 and value.endswith('...') and ' at 0x' not in value


def test_reference_pages_list_each_parameters_docment():
    "The comments beside the parameters (docments), which nbdev's show_doc shows, are on the reference pages too"
    from conf import add_parameters
    from imagenette_course.data import get_dls
    lines = ['The docstring']
    add_parameters(None, 'function', 'get_dls', get_dls, {}, lines)
    assert lines[:3] == ['The docstring', '', ':param bs: batch size'] and ":param dataset: or 'imagewoof'" in lines
    add_parameters(None, 'data', 'MODES', {}, {}, lines := [])
    assert lines == []
    from imagenette_course.data import run_config
    add_parameters(None, 'function', 'run_config', run_config, {}, lines := [])
    assert ':param overrides: settings that win over both (`None` ones are ignored, as the CLI passes them)' in lines


def test_the_notebooks_formulas_are_counted_outside_code():
    assert len(formulas('The blend $\\lambda x_i$, and $$q = 1$$, not `$HOME` nor\n```\necho $A $B\n```')) == 2


def test_a_pages_markdown_has_its_text_code_and_text_outputs(tmp_path):
    "The `.html.md` beside each page, which nbdev's `Docs:` links name: no progress bars or figures, which aren't text"
    out = lambda otype, **kw: nbformat.v4.new_output(otype, **kw)
    src = write_notebook(tmp_path/'02_demo.ipynb', nbformat.v4.new_markdown_cell('# Demo, after [data](01_data.ipynb#x)'),
        nbformat.v4.new_code_cell('print(1)\nlearn.fit(1)', outputs=[out('stream', name='stdout', text='1\n'),
            out('display_data', data={'text/html': '<progress>', 'text/plain': '<IPython.core.display.HTML object>'})]),
        nbformat.v4.new_code_cell('plt.plot()', outputs=[out('display_data', data={'image/png': 'iVBOR',
                                                                                   'text/plain': '<Figure>'})]))
    assert as_markdown(process_notebook(src, tmp_path/'out.ipynb')) == (
        '# Demo, after [data](data.html#x)\n\n```python\nprint(1)\nlearn.fit(1)\n```\n\n```\n1\n```\n\n```python\nplt.plot()\n```\n')


def test_empty_progress_displays_are_dropped(tmp_path):
    "`learn.tta()` leaves a bar at 0% and an epoch table without rows; a table with rows stays"
    html = lambda h: nbformat.v4.new_output('display_data', data={'text/html': h, 'text/plain': h})
    bar = '<div><progress max="1" value="0"></progress> 0.00% [0/1 00:00&lt;?]</div>'
    table = '<table class="fastprogress"><thead><tr><th>epoch</th></tr></thead><tbody>{}</tbody></table>'
    src = write_notebook(tmp_path/'05_demo.ipynb', nbformat.v4.new_code_cell('learn.tta()', outputs=[
        html(f'<div>{bar}<div>{table.format("")}</div></div>'), html(table.format('<tr><td>0</td></tr>')),
        html('<div></div>'), html(table.format('<tr><td>0</td></tr>') + table.format('')),  # a table with rows kept
        html('<table><thead><tr><th>x</th></tr></thead><tbody></tbody></table>')]))  # not fastprogress's: kept
    shown = [o.data['text/html'] for o in process_notebook(src, tmp_path/'out.ipynb').cells[0].outputs]
    assert len(shown) == 4 and shown[0] == table.format('<tr><td>0</td></tr>') and shown[1] == '<div></div>'


def test_a_pages_markdown_has_no_html_only_lines_and_a_badge_that_loads(tmp_path):
    "MyST's title id and methods' anchors mean nothing in Markdown; the site's badge copy isn't beside the `.html.md`"
    source = ('{#mixup-chapter}\n# Mixup\n\n[![Open In Colab](colab-badge.svg)](https://colab.research.google.com/x)'
              '\n\n## MixUp\n\n<span id="mixup.before_batch"></span>\n<span id="mixup.lf"></span>\n\ntext')
    text = markdown_text(source)
    assert text == ('# Mixup\n\n[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]'
                    '(https://colab.research.google.com/x)\n\n## MixUp\n\n\ntext')
    (tmp_path/'mixup.html.md').write_text(source)
    assert len(markdown_problems(tmp_path)) == 4  # the badge, the title's id, two anchors
    (tmp_path/'mixup.html.md').write_text(text)
    assert markdown_problems(tmp_path) == []
