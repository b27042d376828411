"""Read the built site in headless Chromium, as a reader would, and fail on anything broken.

Serves `_site/` on a free loopback port and opens every page reachable from the home page: none may log a console
error or fail a request, every image must decode, and every internal link (anchors included) must resolve. Each
notebook's page must exist and show the notebook's H1 title, its figures, its formulas drawn (no raw `$$`), and no
nbdev plumbing (`#|` lines, nbval markers), nor empty progress bars. Each reference page must have an entry for
every name of its module's `__all__`, no docstring its methods only inherit, and no smart quotes in code. The links
nbdev writes into the package (`Docs:` lines, `_modidx.py`) must name files of the site, and the Markdown beside each
page no missing image nor HTML-only lines. Screenshots of the home page and the first chapter go to `_site_check/`;
their paths are printed.

Usage: python docs/check_site.py [--site DIR] [--nbs DIR] [--shots DIR]
"""
import argparse, ast, importlib, inspect, re, sys, threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin

import nbformat
from playwright.sync_api import sync_playwright

from build_site import PACKAGE, ROOT, documented, modules, notebooks, page_name

# Every chapter page links to its notebook in Colab (the notebook's Open in Colab badge).
COLAB = 'https://colab.research.google.com/github/imagenette-course/imagenette_course/blob/main/nbs/'

CHROMIUM = '/usr/bin/chromium'  # Debian's package: Playwright's own browser downloads need internet
# Flags for a quiet, self-contained browser: no sandbox (CI runs as root), no GPU, no calls home.
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']

# What a page looks like to a reader, gathered in the browser.
PAGE_JS = """() => {
  const h1 = document.querySelector('h1');
  let title = null;
  if (h1) { const c = h1.cloneNode(true); c.querySelectorAll('.headerlink').forEach(a => a.remove());
            title = c.textContent.trim(); }
  return {
    title, title_visible: !!h1 && h1.getBoundingClientRect().height > 0,
    broken_images: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
    n_figures: document.querySelectorAll('article img:not([alt="Open In Colab"])').length,  // the badge is no figure
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id], a[name]')].map(e => e.id || e.name),
    code: [...document.querySelectorAll('article pre')].map(p => p.textContent),
    n_math: document.querySelectorAll('article math').length,
    // What a progress display leaves when it showed nothing: a bar, or a table with a header and no rows
    n_empty_progress: document.querySelectorAll('article progress').length
                      + [...document.querySelectorAll('article tbody')].filter(b => !b.rows.length).length,
    text: document.querySelector('article')?.innerText ?? '',
  };
}"""


@dataclass
class Chapter:
    "What a notebook's page must show"
    nb: Path
    title: str
    n_figures: int
    n_math: int

    @property
    def page(self): return f'{page_name(self.nb)}.html'


def readable(md):
    "Markdown inline text as a browser shows it: without code backticks and emphasis stars"
    return re.sub(r'[`*]', '', md).strip()


# A formula in a notebook's Markdown, `$...$` or `$$...$$`, once code (fenced and inline) is taken out
FORMULA = re.compile(r'\$\$.+?\$\$|\$[^$\n]+\$', re.DOTALL)
CODE = re.compile(r'```.*?```|`[^`\n]*`', re.DOTALL)


def formulas(markdown):
    "The formulas of a Markdown cell, as Jupyter renders them"
    return FORMULA.findall(CODE.sub('', markdown))


def chapter(nb_path):
    "The notebook's H1 title, and how many image outputs and formulas it has committed"
    nb = nbformat.read(nb_path, as_version=4)
    titles = [m.group(1) for c in nb.cells if c.cell_type == 'markdown'
              for m in [re.search(r'^# (.+)$', c.source, re.MULTILINE)] if m]
    images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
              if any(k.startswith('image/') for k in o.get('data', {}))]
    n_math = sum(len(formulas(c.source)) for c in nb.cells if c.cell_type == 'markdown')
    return Chapter(nb_path, readable(titles[0]) if titles else None, len(images), n_math)


@dataclass
class Report:
    "One page as Chromium saw it"
    status: int
    errors: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass  # one line per request would bury the check's own report


@contextmanager
def serve(site):
    "Serve `site` on a free port of 127.0.0.1 for the duration; yields the base URL"
    server = ThreadingHTTPServer(('127.0.0.1', 0), partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try: yield f'http://127.0.0.1:{server.server_port}/'
    finally: server.shutdown()


def visit(page, url):
    "Open `url` in `page` and report what a reader gets"
    errors = []
    handlers = dict(
        console=lambda m: m.type == 'error' and errors.append(f"console error: {m.text} ({m.location.get('url')})"),
        pageerror=lambda e: errors.append(f'script error: {e}'),
        # A request cancelled by the next navigation (the favicon, say) is the check's doing, not the site's.
        requestfailed=lambda r: 'ERR_ABORTED' not in r.failure and errors.append(f'failed: {r.url} ({r.failure})'),
        response=lambda r: r.status >= 400 and errors.append(f'HTTP {r.status}: {r.url}'))
    for event, handler in handlers.items(): page.on(event, handler)
    try:
        response = page.goto(url, wait_until='load')
        return Report(response.status, errors, page.evaluate(PAGE_JS) if response.ok else {})
    finally:
        for event, handler in handlers.items(): page.remove_listener(event, handler)


def crawl(page, base):
    "Visit every HTML page linked from the home page, following internal links; {url: Report}"
    reports, todo = {}, [urljoin(base, 'index.html')]
    while todo:
        url = todo.pop()
        if url in reports: continue
        reports[url] = report = visit(page, url)
        linked = [urldefrag(link).url for link in report.info.get('links', [])]
        todo += [u for u in linked if u.startswith(base) and u.endswith('.html') and u not in reports]
    return reports


def link_problems(page, base, reports):
    "Internal links that don't resolve: a missing file, or an anchor the target page doesn't have"
    problems, status = [], {}
    for url, report in reports.items():
        for link in report.info.get('links', []):
            target, anchor = urldefrag(link)
            if not target.startswith(base): continue
            if target not in reports and target not in status: status[target] = page.request.get(target).status
            if (reports[target].status if target in reports else status[target]) != 200:
                problems.append(f'{url}: broken link to {target}')
            elif anchor and target in reports and unquote(anchor) not in reports[target].info.get('ids', []):
                problems.append(f'{url}: link to missing anchor {link}')
    return problems


def page_problems(url, report):
    "What any page must get right"
    if report.status != 200: return [f'{url}: HTTP {report.status}']
    return [f'{url}: {e}' for e in report.errors] + [f'{url}: image did not load: {src}'
                                                     for src in report.info['broken_images']]


def chapter_problems(base, chapter, reports):
    "What a notebook's page must show: its title, its figures, and none of nbdev's plumbing"
    url = urljoin(base, chapter.page)
    if url not in reports: return [f'{chapter.nb.name}: no page {chapter.page} reachable from the home page']
    info, problems = reports[url].info, []
    if not info: return []  # the page itself failed: page_problems says how
    if chapter.title is None: problems.append(f'{chapter.nb.name}: the notebook has no H1 title')
    elif info['title'] != chapter.title or not info['title_visible']:
        problems.append(f'{url}: H1 is {info["title"]!r}, expected the notebook title {chapter.title!r}')
    if info['n_figures'] < chapter.n_figures:
        problems.append(f'{url}: {info["n_figures"]} figures shown, the notebook has {chapter.n_figures}')
    if info['n_math'] < chapter.n_math or '$$' in info['text']:
        problems.append(f'{url}: {info["n_math"]} formulas drawn, the notebook has {chapter.n_math}'
                        + (' (raw $$ on the page)' if '$$' in info['text'] else ''))
    if COLAB + chapter.nb.name not in info['links']:
        problems.append(f'{url}: no Open in Colab link to {COLAB + chapter.nb.name}')
    plumbing = [l for code in info['code'] for l in code.splitlines() if re.match(r'\s*(#\||#\s*NBVAL_)', l)]
    if plumbing: problems.append(f'{url}: nbdev plumbing shown: {plumbing}')
    if info['n_empty_progress']:
        problems.append(f'{url}: {info["n_empty_progress"]} empty progress bars or epoch tables shown')
    return problems


def defined_names(node):
    "The names a module-level statement defines: a function's or class's, or an assignment's (`A, B = 1, 2` too)"
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): return [node.name]
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def documented_names(module_file):
    "The functions, classes and constants that `module_file` exports (in `__all__`): each needs a reference entry"
    tree = ast.parse(Path(module_file).read_text())
    exported = next((ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                     and any(getattr(t, 'id', None) == '__all__' for t in n.targets)), [])
    defined = [name for node in tree.body for name in defined_names(node)]
    return [name for name in dict.fromkeys(defined) if name in exported]


def inherited_docstrings(module):
    "The first lines of the docstrings that the exported classes' undocumented methods inherit (torch's `forward`'s)"
    mod = importlib.import_module(f'{PACKAGE}.{module}')
    exported = [getattr(mod, name) for name in mod.__all__]
    classes = [c for c in exported if isinstance(c, type) and c.__module__ == mod.__name__]
    docs = [inspect.getdoc(getattr(c, name)) for c in classes for name, f in vars(c).items()
            if inspect.isfunction(f) and not f.__doc__]
    return [readable(doc.splitlines()[0]) for doc in docs if doc]


# What Sphinx's smart quotes make of `'random'` and `--presize`; a dash before a space separates a parameter's docment
SMART_QUOTES = re.compile(r'[\u2018\u2019\u201c\u201d]|[\u2013\u2014](?=\S)')


def smart_quotes(text, module):
    "The curly quotes, and dashes joined to a word, in `text`, `module`'s reference page, that its source doesn't have"
    source = (ROOT/PACKAGE/f'{module}.py').read_text()
    return sorted({m[0] for m in SMART_QUOTES.finditer(text) if m[0] not in source})


def api_problems(base, module, reports):
    "Exported functions and classes of `module` that have no entry on its reference page"
    url = urljoin(base, f'api/{module}.html')
    if url not in reports: return [f'{PACKAGE}.{module}: no reference page {url} reachable from the home page']
    ids, text = reports[url].info.get('ids', []), reports[url].info.get('text', '')
    problems = [f'{url}: no reference entry for {PACKAGE}.{module}.{name}'
                for name in documented_names(ROOT/PACKAGE/f'{module}.py') if f'{PACKAGE}.{module}.{name}' not in ids]
    problems += [f'{url}: shows an inherited docstring: {doc!r}' for doc in inherited_docstrings(module) if doc in text]
    if chars := smart_quotes(text, module): problems.append(f'{url}: smart quotes changed the docstrings: {chars}')
    return problems


def documents(anchor, name, html):
    "Whether `anchor` of `name` (`f`, `Class` or `Class.method`) lands on a heading that names it, in the page `html`"
    heading = rf'<h[1-6]>(<code[^>]*><span class="pre">)?{re.escape(name.split(".")[0])}(</span></code>)?<a'
    spans = r'(<span id="[^"]*"></span>\s*)*'
    own = rf'id="{re.escape(anchor)}"[^>]*>(</span>)?\s*{spans}{heading}'  # a name's section, or MyST's span before it
    method = rf'{heading}[^>]*>[^<]*</a></h[1-6]>\s*<p>{spans}<span id="{re.escape(anchor)}"'  # in its class's heading
    return re.search(method if '.' in name else own, html) is not None


def nbdev_link_problems(site):
    "Links nbdev writes into the package (each module's `Docs:` line, `_modidx.py`) that name no page or anchor of the site"
    from imagenette_course._modidx import d as modidx
    problems = []
    for module in modules(ROOT/PACKAGE):
        doc = ast.get_docstring(ast.parse((ROOT/PACKAGE/f'{module}.py').read_text())) or ''
        url = next((line[5:].strip() for line in doc.splitlines() if line.startswith('Docs:')), None)
        if url is None: problems.append(f'{PACKAGE}.{module}: no Docs: link in its docstring (nbdev writes one)')
        elif not (site/url.rsplit('/', 1)[-1]).is_file():
            problems.append(f'{PACKAGE}.{module}: Docs: {url} is not on the site')
    links = {link: sym.removeprefix(f'{mod}.') for mod, syms in modidx['syms'].items() for sym, (link, _) in syms.items()}
    for link, name in sorted(links.items()):
        page, _, anchor = link.partition('#')
        if not (site/page).is_file(): problems.append(f'_modidx.py links to {page}, which is not on the site')
        elif documented(link) and not documents(anchor, name, (site/page).read_text()):
            problems.append(f'_modidx.py links to {link}, which is not an anchor of its documentation there')
    return problems


# What only the HTML page needs, and plain Markdown shows as text: a MyST heading id, an `export_doc` method anchor
HTML_ONLY = re.compile(r'^(\{#[\w-]+\}|<span id="[^"]+"></span>)$', re.MULTILINE)
IMAGE = re.compile(r'!\[[^\]]*\]\(([^)\s]+)')


def markdown_problems(site):
    "What the Markdown beside each page (`data.html.md`, which `Docs:` links name) gets wrong: images, MyST-only lines"
    problems = []
    for md in sorted(Path(site).glob('*.html.md')):
        text = md.read_text()
        problems += [f'{md.name}: image {src} is not on the site' for src in IMAGE.findall(text)
                     if '://' not in src and not (md.parent/unquote(src)).is_file()]
        problems += [f'{md.name}: line for the HTML page only: {line}' for line in HTML_ONLY.findall(text)]
    return problems


def check(site, nbs, shots):
    "All problems found on the site, after saving the screenshots; prints what it visits"
    chapters = [chapter(nb) for nb in notebooks(nbs)]
    # Playwright starts Chromium with a fresh temporary profile, so nothing is cached from an earlier run.
    with serve(site) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=dict(width=1280, height=900))
        reports = crawl(page, base)
        problems = [p for url, r in reports.items() for p in page_problems(url, r)]
        problems += [p for c in chapters for p in chapter_problems(base, c, reports)]
        problems += [p for m in modules(ROOT/PACKAGE) for p in api_problems(base, m, reports)]
        problems += link_problems(page, base, reports)
        problems += nbdev_link_problems(Path(site))
        problems += markdown_problems(site)
        print(f'checked {len(reports)} pages ({len(chapters)} notebooks) at {base}')
        save_screenshots(page, base, chapters[:2], shots)
        browser.close()
    return problems


def save_screenshots(page, base, chapters, shots):
    "Full-page screenshots of the home page and the first chapter, for a person to look at"
    shots.mkdir(parents=True, exist_ok=True)
    for c in chapters:
        path = shots/f'{page_name(c.nb)}.png'
        page.goto(urljoin(base, c.page), wait_until='load')
        page.screenshot(path=path, full_page=True)
        print(f'screenshot: {path.resolve()}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--site', type=Path, default=ROOT/'_site', help='the built site (default: _site/)')
    parser.add_argument('--nbs', type=Path, default=ROOT/'nbs', help='the notebooks it was built from (default: nbs/)')
    parser.add_argument('--shots', type=Path, default=ROOT/'_site_check', help='screenshots (default: _site_check/)')
    args = parser.parse_args(argv)
    if not (args.site/'index.html').is_file(): sys.exit(f'no site at {args.site}: build it first (make docs)')
    problems = check(args.site, args.nbs, args.shots)
    if problems: sys.exit('site check failed:\n  ' + '\n  '.join(dict.fromkeys(problems)))  # once each
    print('site check passed')


if __name__ == '__main__': main()
