"The docs build's notebook processing; the whole site is built and read in Chromium by `make docs docs-check`"
import sys
from pathlib import Path

import nbformat
import pytest

DOCS = Path(__file__).resolve().parents[1]/'docs'
sys.path.insert(0, str(DOCS))
from build_site import NotebookError, notebooks, page_name, process_notebook  # noqa: E402
from check_site import chapter, documented_names, formulas  # noqa: E402

NBS = DOCS.parent/'nbs'


def write_notebook(path, *cells):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nbformat.write(nb, path)
    return path


def test_plumbing_is_stripped(tmp_path):
    src = write_notebook(tmp_path/'01_demo.ipynb',
        nbformat.v4.new_code_cell('#| default_exp demo'),
        nbformat.v4.new_markdown_cell('# Demo\n\n> A demo. Back [home](00_index.ipynb#chapters).'),
        nbformat.v4.new_code_cell('#| export\ndef f(x): return x'),
        nbformat.v4.new_code_cell('# NBVAL_CHECK_OUTPUT\nf(1)'),
        nbformat.v4.new_code_cell('#| hide\nimport nbdev; nbdev.nbdev_export()'))
    nb = process_notebook(src, tmp_path/'out.ipynb')
    assert [c.source for c in nb.cells] == ['# Demo\n\n> A demo. Back [home](index.ipynb#chapters).',
                                           'def f(x): return x', 'f(1)']


def test_invalid_notebook_fails_naming_it(tmp_path):
    src = tmp_path/'05_broken.ipynb'
    src.write_text('{"cells": [')
    with pytest.raises(NotebookError, match='05_broken.ipynb'): process_notebook(src, tmp_path/'out.ipynb')


def test_home_page_then_chapters_by_file_name():
    assert [page_name(p) for p in notebooks(NBS)][:3] == ['index', '01_data', '02_baseline']


def test_chapter_titles_and_api_names():
    assert chapter(NBS/'01_data.ipynb').title.startswith('Data')
    assert {'get_dls', 'RunConfig'} <= set(documented_names(DOCS.parent/'imagenette_course'/'data.py'))


def test_reference_pages_list_each_parameters_docment():
    "The comments beside the parameters (docments), which nbdev's show_doc shows, are on the reference pages too"
    from conf import add_parameters
    from imagenette_course.data import get_dls
    lines = ['The docstring']
    add_parameters(None, 'function', 'get_dls', get_dls, {}, lines)
    assert lines[:3] == ['The docstring', '', ':param bs: batch size'] and ":param dataset: or 'imagewoof'" in lines
    add_parameters(None, 'data', 'MODES', {}, {}, lines := [])
    assert lines == []


def test_the_notebooks_formulas_are_counted_outside_code():
    assert len(formulas('The blend $\\lambda x_i$, and $$q = 1$$, not `$HOME` nor\n```\necho $A $B\n```')) == 2
