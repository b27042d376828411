"""A Sphinx math renderer that writes MathML: browsers draw it themselves, so the site's formulas need no MathJax
from a CDN and show offline (CI's browser check reads the site without internet)."""
from docutils import nodes
from latex2mathml.converter import convert


def visit_inline(self, node):
    self.body.append(convert(node.astext()))
    raise nodes.SkipNode


def visit_block(self, node):
    self.body.append(f'<div class="math">{convert(node.astext(), display="block")}</div>')
    raise nodes.SkipNode


def setup(app):
    app.add_html_math_renderer('mathml', (visit_inline, None), (visit_block, None))
    return dict(parallel_read_safe=True, parallel_write_safe=True)
