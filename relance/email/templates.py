"""MJML templates with Jinja2 inside: render per recipient, check for the validator.

Templates are `templates/emails/NAME.mjml` and may extend `layout.mjml`. The internal templates
(INTERNAL: staff mail relance writes by itself) ship with relance in `relance/email/defaults/`; a
file of the same name in the templates folder wins. Jinja runs first
(sandboxed, autoescaped), then MJML -> HTML (mjml-python); the text part is derived from that
HTML (see `text_of`), so it says what the HTML says. The subject and the preheader are rendered
in the same sandbox with the same context; a template that does not place `{{ preheader }}` gets
it as its `<mj-preview>`. An email to a lead that shows no unsubscribe link or no postal address
gets relance's footer (`with_footer`); `check(name, to_lead=True)` reports such a template.
Each render has RenderLimits (time, loop turns and calls, size of what it makes, size of a template
file): past one, it stops with a RenderError saying which, never a hang or a MemoryError.
Every template gets this context:

- `lead`: email, first_name, last_name, job_title, company, sector, country, score, grade,
  stage, fields (a dict of custom fields)
- `unsubscribe_url` (None in internal emails), `postal_address`, `sender` (display name),
  `preheader` (rendered), `scenario`, `step_id`, `internal`
"""

from __future__ import annotations

import functools
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lxml.etree
from jinja2 import (FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound, TemplateRuntimeError,
                    TemplateSyntaxError, UndefinedError, meta, nodes)
from jinja2.loaders import split_template_path
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum
from jinja2.visitor import NodeTransformer
from markupsafe import escape
from mjml import mjml2html

from relance.textfile import TextFileError, read_text, size_of

SAMPLE_CONTEXT: dict[str, Any] = {
    "lead": {
        "email": "lea.martin@acme.example", "first_name": "Léa", "last_name": "Martin", "job_title": "Directrice marketing",
        "company": "ACME", "sector": "saas", "country": "FR", "score": 42, "grade": "B", "stage": "lead", "fields": {},
    },
    "unsubscribe_url": "https://relance.example/u/sample",
    "postal_address": "10 rue de la Paix, 75002 Paris",
    "sender": "Relance",
    "preheader": "",
    "scenario": "sample",
    "step_id": "sample",
    # what internal emails add (relance.sales): checked too, so `relance validate` sees every branch
    "handoff": {"owner": "claire@relance.example", "deadline": "2026-03-04 09:00 UTC", "target": "2026-03-02 11:00 UTC",
                "kind": "handoff"},
    "score_explanation": ["+10 downloaded", "+25 demo_requested"],
    "recent_activity": ["2026-03-02 08:40 demo_requested form=demo"],
    "failed": {"id": 1841, "to": "claire@relance.example", "what": "l'email de hand-off", "resend": "relance outbox resend 1841",
               "why": "cannot be built: RenderError: template 'sales-handoff': MJML does not compile"},  # the manager's alert
}


DEFAULTS_DIR = Path(__file__).parent / "defaults"
# staff mail relance writes by itself, whatever the scenarios say: hand-off, SLA and withdrawn emails and
# `notify` steps without a template (sales-handoff); the manager's alert when one of them fails (staff-mail-failed)
INTERNAL = {"sales-handoff": "hand-off, SLA, withdrawn and notify emails", "staff-mail-failed": "the manager's alert when staff mail fails"}


class RenderError(ValueError):
    """A template could not be rendered; the message names the template and the cause."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def one_line(text: str) -> str:
    """Header-safe: CR, LF and runs of whitespace become single spaces."""
    return re.sub(r"\s+", " ", text).strip()


# The text part's pipeline, most of it in C: the HTML is cut down before lxml parses it (comments, that is
# Outlook-only blocks and `<!--[if !mso]><!-->` markers; the layout attributes; the preheader block
# mjml-python writes), which makes the parse several times cheaper than the whole page's; block
# boundaries are marked in the string (a zero-width substitution; a Python walk over the layout tables
# would cost more than the parse) and laid out once the text is out: a block (cell, paragraph, div,
# heading, list) starts and ends a paragraph, `<br>` and a list item a line.
_COMMENT = re.compile(r"<!--[^-]*(?:-(?!->)[^-]*)*-->")  # unrolled: a lazy `.*?` costs five times more
# every attribute but the link, the alt text and `hidden` (a hiding style becomes `hidden` first);
# mjml-python writes lowercase, double-quoted attributes (re.I would triple the cost)
_LAYOUT_ATTRIBUTE = re.compile(r' (?!href=|alt=|hidden)[a-z][a-z:-]*="[^"]*"')
_HIDING_STYLE = re.compile(r'style="[^"]*display: ?none[^"]*"')
_MJ_PREVIEW_DIV = re.compile(r'<div style="display:none;font-size:1px;[^"<>]*">[^<]*</div>')
_LINE, _PARAGRAPH = "\ue000", "\ue001"
_BLOCK_TAG = re.compile(r"<(?=/?(?:td|th|p|div|h[1-6]|ul|ol|table|blockquote|pre|hr|center|dl|dt|dd)[\s>/])")
_PARSER = lxml.etree.HTMLParser(remove_comments=True, remove_pis=True, collect_ids=False)
_HIDDEN = lxml.etree.XPath("//body//*[@hidden]")
_BREAKS = re.compile(f" ?[{_LINE}{_PARAGRAPH}][{_LINE}{_PARAGRAPH} ]*")


def text_of(html: str) -> str:
    """The text part: what a reader of the HTML sees, in order, from the rendered HTML itself.

    Comments (Outlook-only `<!--[if mso]>` blocks, `<!--[if !mso]><!-->` markers) and hidden elements
    (`display:none`: the preheader) are not part of it; an image says `[alt]` (nothing without alt);
    a link is followed by its address, `label (URL)`; a link with no words (an image without alt) is its
    bare URL, unless the link just before it or a worded one just after it goes to the same address
    (a social icon next to its label, two images side by side)."""
    start = html.find("<body")
    body = _MJ_PREVIEW_DIV.sub("", _COMMENT.sub("", html[start:] if start >= 0 else html), count=1)
    hiding = "display:none" in body or "display: none" in body  # plain searches: most emails have none left
    if hiding:
        body = _HIDING_STYLE.sub("hidden", body)
    body = _BLOCK_TAG.sub(_PARAGRAPH + "<", _LAYOUT_ATTRIBUTE.sub("", body))
    root = lxml.etree.fromstring(body.replace("<br", _LINE + "<br").replace("<li", _LINE + "<li"), _PARSER)
    if hiding or " hidden" in body:
        for hidden in _HIDDEN(root):
            hidden.clear(keep_tail=True)
    links = []
    for element in root.iter("a", "img"):
        if element.tag == "img":
            alt = " ".join((element.get("alt") or "").split())
            element.text = f"[{alt}]" if alt else None
        elif (href := element.get("href")) and not href.startswith("#"):
            links.append((element, href))
    labels = [" ".join("".join(link.itertext()).replace(_LINE, " ").replace(_PARAGRAPH, " ").split()) for link, _ in links]
    for index, (link, href) in enumerate(links):
        if labels[index]:
            if labels[index] != href:
                link.tail = f" ({href})" + (link.tail or "")
            continue
        before = links[index - 1][1] if index else None
        after, after_label = (links[index + 1][1], labels[index + 1]) if index + 1 < len(links) else (None, "")
        if href == before or (href == after and after_label):  # said by the link next to it
            link.clear(keep_tail=True)
        else:
            link.text = href
    inside = root.find("body")
    text = " ".join(lxml.etree.tostring(root if inside is None else inside, method="text", encoding="unicode").split())
    return _BREAKS.sub(lambda m: "\n\n" if _PARAGRAPH in m.group() else "\n", text).strip() + "\n"


_MJ_PREVIEW = re.compile(r"<mj-preview\b[^>]*>.*?</mj-preview>|<mj-preview\b[^>]*/>", re.S | re.I)
_MJ_HEAD_OPEN = re.compile(r"<mj-head\b[^>]*>", re.I)
_MJML_OPEN = re.compile(r"<mjml\b[^>]*>", re.I)


def with_preview(mjml: str, preheader: str) -> str:
    """`mjml` whose inbox preview text is `preheader` (already one line): the template's own
    `<mj-preview>` replaced, or one added to `<mj-head>` (made if there is none)."""
    preview = f"<mj-preview>{escape(preheader)}</mj-preview>"
    if _MJ_PREVIEW.search(mjml):
        return _MJ_PREVIEW.sub(lambda _: preview, mjml, count=1)
    if head := _MJ_HEAD_OPEN.search(mjml):
        return mjml[:head.end()] + preview + mjml[head.end():]
    if root := _MJML_OPEN.search(mjml):
        return mjml[:root.end()] + f"<mj-head>{preview}</mj-head>" + mjml[root.end():]
    return mjml  # not MJML at all: mjml2html says so


def missing_footer(html: str, text: str, context: dict[str, Any]) -> list[str]:
    """What an email to a lead must show and this one does not: the unsubscribe link (an `href` to
    `unsubscribe_url` in the HTML, and in the text part, so neither commented out nor hidden) and the
    postal address (in the words the reader sees, the text part)."""
    missing = []
    url = context.get("unsubscribe_url") or ""
    linked = f'href="{url}"' in html or f'href="{escape(url)}"' in html or f"href='{escape(url)}'" in html
    # seen: a worded link is "label (URL)" in the text part, a link whose words are the URL shows it; an empty
    # link (no words, no image) is only its bare URL in the text part, and nothing at all in the HTML
    seen = f"({url})" in text or f">{escape(url)}</a>" in html or f">{url}</a>" in html
    if not url or url not in text or not linked or not seen:
        missing.append("unsubscribe link ({{ unsubscribe_url }} as a link)")
    address = str(context.get("postal_address") or "")
    if not address or (address not in text and " ".join(address.split()) not in " ".join(text.split())):
        missing.append("postal address ({{ postal_address }})")
    return missing


def with_footer(html: str, context: dict[str, Any]) -> str:
    """`html` with relance's own minimal footer (sender, postal address, unsubscribe link) before `</body>`."""
    footer = (
        '<div style="margin:0 auto;max-width:600px;padding:16px;font-family:Helvetica,Arial,sans-serif;'
        'font-size:12px;line-height:1.5;color:#6b7280;text-align:center;">'
        f'<p style="margin:0">{escape(context.get("sender") or "")} · {escape(context.get("postal_address") or "")}</p>'
        f'<p style="margin:0"><a href="{escape(context.get("unsubscribe_url") or "")}" style="color:#6b7280">'
        "Se désinscrire</a></p></div>"
    )
    at = html.rfind("</body>")
    return html[:at] + footer + html[at:] if at >= 0 else html + footer


# --------------------------------------------------------------------------- what one render may take


@dataclass(frozen=True)
class RenderLimits:
    """What rendering one email may take, so that no template (or lead data) hangs a tick or fills the memory:
    a deadline (`seconds` of the render's own computing, its thread's CPU time: a loaded machine that gives the
    render less of its time does not make an email fail), loop turns and calls (macros, functions, methods), the size of any text made along the way and of
    the email (MJML, then HTML), and the size of a template file."""

    seconds: float = 2.0
    turns: int = 100_000
    output: int = 2_000_000  # characters; Gmail already clips an email past 102 KB
    template_bytes: int = 512_000


class LimitExceeded(TemplateRuntimeError):
    """A render went past one of its RenderLimits; the message says which and what to look at."""


class _Budget:
    """The limits of one render, counted as it goes."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits, self.turns = limits, 0
        self.deadline = time.thread_time() + limits.seconds  # this render's own computing: a busy machine does not count

    def turn(self) -> None:
        """One loop turn or call: past the count or the deadline, the render stops."""
        self.turns += 1
        if self.turns > self.limits.turns:
            raise LimitExceeded(f"stopped after {self.limits.turns:,} loop turns and calls: a loop or a macro repeats "
                                "too much for one email")
        self.in_time()

    def in_time(self) -> None:
        if time.thread_time() > self.deadline:
            raise LimitExceeded(f"stopped after {self.limits.seconds:g} s: a loop or a macro repeats too much for one email")

    def expect(self, size: int) -> None:
        """Refuse to make a text (or list) of `size`, before it is made."""
        if size > self.limits.output:
            raise LimitExceeded(too_long(size, self.limits.output))

    def sized(self, value: Any) -> Any:
        if isinstance(value, (str, list, tuple)):
            self.expect(len(value))
        return value


def too_long(size: int, limit: int) -> str:
    return (f"would make {size:,} characters (or items), more than the {limit:,} ({size_of(limit)}) one email may hold: "
            "a loop repeats too much, or a text is multiplied")


_BUDGET: ContextVar[_Budget | None] = ContextVar("relance_render_budget", default=None)
_LOOP, _SIZED = "relance:loop", "relance:sized"  # not names a template can write: only the guard below uses them


def _turns(iterable: Any) -> Any:
    budget = _BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.turn()
        yield item


def _sized(value: Any) -> Any:
    budget = _BUDGET.get()
    return value if budget is None else budget.sized(value)


class _Guard(NodeTransformer):
    """Every `{% for %}` counts its turns; every `~` checks the size of what it made."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        return nodes.Filter(self.generic_visit(node), _SIZED, [], [], None, None, lineno=node.lineno)


_FORMAT_WIDTH = re.compile(r"%[-#0 +]*\.?(\d+)|\{[^{}]*?[:.,<>=^ +-](\d+)[^{}]*\}")


def _format_widths(text: Any) -> int:
    """The widest field (or precision) a %-format or str.format string asks for; 0 when none."""
    if not isinstance(text, str):
        return 0
    widths = [a or b for a, b in _FORMAT_WIDTH.findall(text)]
    return max((int(width) if len(width) < 12 else 10 ** 12 for width in widths), default=0)


def _width(value: Any) -> int:
    return len(value) if isinstance(value, str) else value if isinstance(value, int) and not isinstance(value, bool) else 0


def _replaced(text: Any, old: Any = "", new: Any = "", count: Any = None) -> int:
    if not all(isinstance(v, str) for v in (text, old, new)):
        return 0
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


def _joined(items: Any, separator: Any = "", *_args: Any) -> int:
    return len(separator) * len(items) if isinstance(separator, str) and hasattr(items, "__len__") else 0


# How big the text a filter or a str method makes can get, from its arguments, before it makes it.
_SIZE_OF: dict[str, Callable[..., int]] = {
    "center": lambda text, width=80, *_: _width(width),
    "ljust": lambda text, width=0, *_: _width(width),
    "rjust": lambda text, width=0, *_: _width(width),
    "zfill": lambda text, width=0, *_: _width(width),
    "indent": lambda text, width=4, *_a, **_k: len(str(text)) + (str(text).count("\n") + 1) * _width(width),
    "expandtabs": lambda text, tabsize=8: len(text) + text.count("\t") * _width(tabsize),
    "replace": _replaced,
    "format": lambda text, *_a, **_k: _format_widths(text),
    "format_map": lambda text, *_a: _format_widths(text),
    "wordwrap": lambda text, width=79, _b=True, wrapstring=None, *_a, **_k: len(str(text)) * (1 + len(wrapstring or "\n")),
}
_FILTER_SIZE_OF = {**_SIZE_OF, "join": lambda items, d="", *_: _joined(items, d)}
_METHOD_SIZE_OF = {**_SIZE_OF, "join": lambda separator, items, *_: _joined(items, separator),
                   "extend": lambda items, more, *_: len(items) + len(more) if hasattr(more, "__len__") else 0}


def _guarded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A filter that refuses to make a text past the limit (before, when its arguments tell, else after)."""
    estimate = _FILTER_SIZE_OF.get(name)
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0  # context, eval context or environment

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None and estimate is not None:
            try:
                size = estimate(*args[skip:], **kwargs)
            except TypeError:  # arguments the filter itself refuses: it says so
                size = 0
            budget.expect(size)
        result = function(*args, **kwargs)
        return result if budget is None else budget.sized(result)

    return guarded


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's placeholder text, at most 100 paragraphs of at most 100 words."""
    if not all(isinstance(v, int) and 0 <= v <= 100 for v in (n, min, max)):
        raise LimitExceeded("lipsum() makes at most 100 paragraphs of at most 100 words")
    return generate_lorem_ipsum(n, html, min, max)


class GuardedSandbox(SandboxedEnvironment):
    """Jinja's sandbox, with RenderLimits: loops count their turns, calls too, and no operator, filter or
    method makes a text past the size limit. The limits hold while a render runs inside `budget()`."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _guarded_filter(name, function) for name, function in self.filters.items()}
        self.filters[_LOOP], self.filters[_SIZED] = _turns, _sized
        self.globals["lipsum"] = _lipsum

    def _generate(self, source: nodes.Template, name: str | None, filename: str | None, defer_init: bool = False) -> str:
        return super()._generate(_Guard().visit(source), name, filename, defer_init=defer_init)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        budget = _BUDGET.get()
        if budget is not None:
            if operator == "*":
                for text, times in ((left, right), (right, left)):
                    if isinstance(text, (str, list, tuple)) and isinstance(times, int):
                        budget.expect(len(text) * times)
            elif operator == "**" and all(isinstance(v, int) for v in (left, right)) and right > 0 \
                    and abs(left).bit_length() * right > 10_000:
                raise LimitExceeded(f"{left} ** {right} is too large a number to compute in a template")
            elif operator == "%":
                budget.expect(_format_widths(left))
        result = super().call_binop(context, operator, left, right)
        return result if budget is None else budget.sized(result)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's own signature
        budget = _BUDGET.get()
        if budget is not None:
            budget.turn()
            method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
            owner, estimate = getattr(method, "__self__", None), _METHOD_SIZE_OF.get(getattr(method, "__name__", ""))
            if isinstance(owner, (str, list)) and estimate is not None:
                try:  # Jinja passes its own _loop_vars and _block_vars along
                    size = estimate(owner, *args, **{k: v for k, v in kwargs.items() if not k.startswith("_")})
                except TypeError:
                    size = 0
                budget.expect(size)
        result = super().call(__context, __obj, *args, **kwargs)
        return result if budget is None else budget.sized(result)

    def budget(self, limits: RenderLimits) -> "_Render":
        return _Render(limits)


class _Render:
    """`with environment.budget(limits):` the renders inside share one budget (one deadline)."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits

    def __enter__(self) -> _Budget:
        budget = _Budget(self.limits)
        self._token = _BUDGET.set(budget)
        return budget

    def __exit__(self, *_exc: Any) -> None:
        _BUDGET.reset(self._token)


def produce(template: Any, context: dict[str, Any]) -> str:
    """A template rendered chunk by chunk, each counted against the budget of the render."""
    budget = _BUDGET.get()
    parts: list[str] = []
    size = 0
    for part in template.generate(context):
        size += len(part)
        if budget is not None:
            budget.expect(size)
            budget.in_time()
        parts.append(part)
    return "".join(parts)


class _Templates(FileSystemLoader):
    """The templates folder, then relance's defaults; a file too big or not UTF-8 is a clear error."""

    def __init__(self, folders: list[Path], limit: int) -> None:
        super().__init__([str(folder) for folder in folders])
        self.limit = limit

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        pieces = split_template_path(template)
        for folder in self.searchpath:
            path = Path(folder, *pieces)
            if path.is_file():
                try:
                    text = read_text(path, limit=self.limit, what="a template")
                except TextFileError as exc:
                    where = f":{exc.line}:{exc.col}" if (exc.line, exc.col) != (1, 1) else ""
                    raise TemplateError(f"{path.name}{where}: {exc}") from None
                mtime = path.stat().st_mtime
                return text, str(path), lambda: path.is_file() and path.stat().st_mtime == mtime
        raise TemplateNotFound(template)


def _line_of(exc: BaseException) -> str:
    """Where in a template a render stopped: ` (at NAME.mjml line N)`, when the traceback says."""
    found, tb = "", exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".mjml"):
            found = f" (at {Path(filename).name} line {tb.tb_lineno})"
        tb = tb.tb_next
    return found


class TemplateLibrary:
    """The templates of one folder, compiled once, rendered per recipient."""

    def __init__(self, directory: Path, limits: RenderLimits = RenderLimits()) -> None:
        self.directory = Path(directory)
        self.limits = limits
        self.env = GuardedSandbox(
            loader=_Templates([self.directory, DEFAULTS_DIR], limits.template_bytes), autoescape=True,
            undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
            auto_reload=False,  # a library lives for one batch: no need to stat the files at every render
        )
        self.subject_env = GuardedSandbox(autoescape=False, undefined=StrictUndefined)
        self._subjects: dict[str, Any] = {}
        self._variables: dict[str, frozenset[str]] = {}

    def names(self) -> list[str]:
        """The folder's own templates (relance's defaults aside)."""
        return sorted(p.stem for p in self.directory.glob("*.mjml") if p.stem != "layout")

    def path_of(self, name: str) -> Path | None:
        """The file a template is read from: the folder's, else relance's default (internal templates); None if neither."""
        for folder in (self.directory, DEFAULTS_DIR):
            if (folder / f"{name}.mjml").is_file():
                return folder / f"{name}.mjml"
        return None

    def internal_in_use(self) -> list[tuple[str, Path, bool]]:
        """Each internal template: (name, the file in use, whether it is relance's default)."""
        return [(name, path, path.parent == DEFAULTS_DIR) for name in INTERNAL if (path := self.path_of(name)) is not None]

    def _line(self, source: str, context: dict[str, Any]) -> str:
        """A subject or preheader: Jinja in the same sandbox, no HTML escaping, one line."""
        if "{" not in source:  # nothing for Jinja to do (a fixed preheader, no preheader)
            return one_line(source)
        compiled = self._subjects.get(source)
        if compiled is None:
            compiled = self._subjects[source] = self.subject_env.from_string(source)
        return one_line(produce(compiled, context))

    def variables(self, name: str) -> frozenset[str]:
        """The context variables a template names, with those of what it extends, includes or imports."""
        found = self._variables.get(name)
        if found is None:
            source = self.env.loader.get_source(self.env, name)[0]
            tree = self.env.parse(source)
            found = frozenset(meta.find_undeclared_variables(tree))
            self._variables[name] = found  # first, so a template that includes itself ends here
            for other in meta.find_referenced_templates(tree):
                if other is not None and other != name:
                    found |= self.variables(other)
            self._variables[name] = found
        return found

    def render(self, name: str, *, subject: str, context: dict[str, Any], preheader: str | None = None,
               to_lead: bool = False) -> RenderedEmail:
        """Jinja, then MJML, then the text part from the HTML; errors name the template and what went wrong.

        The preheader is rendered like the subject and becomes the `<mj-preview>` of a template that
        does not show it itself; `to_lead`: an email without the unsubscribe link or the postal address gets relance's footer."""
        where = "subject"
        try:
            with self.env.budget(self.limits):
                where = "preheader"
                rendered_preheader = self._line(preheader or context.get("preheader") or "", context)
                context = {**context, "preheader": rendered_preheader}
                where = "subject"
                rendered_subject = self._line(subject, context)
                where = ""
                mjml = produce(self.env.get_template(f"{name}.mjml"), context)
                if rendered_preheader and ("preheader" not in self.variables(f"{name}.mjml")
                                           or str(escape(rendered_preheader)) not in mjml):  # named, but not shown
                    mjml = with_preview(mjml, rendered_preheader)
        except TemplateNotFound as exc:
            raise RenderError(f"template {name!r}: {exc.name} not found in {self.directory}") from exc
        except UndefinedError as exc:
            raise RenderError(f"template {name!r}: {where + ': ' if where else ''}{exc.message} (check the variable names)") from exc
        except LimitExceeded as exc:
            raise RenderError(f"template {name!r}: {where + ': ' if where else ''}{exc}{_line_of(exc)}") from exc
        except TemplateError as exc:
            raise RenderError(f"template {name!r}: {where + ': ' if where else ''}{exc}") from exc
        except RecursionError as exc:
            raise RenderError(f"template {name!r}: {where + ': ' if where else ''}nested too deeply, or a macro or include "
                              f"calls itself without end{_line_of(exc)}") from None
        except MemoryError as exc:
            raise RenderError(f"template {name!r}: {where + ': ' if where else ''}needs more memory than one email may "
                              f"take{_line_of(exc)}") from None
        try:
            html = mjml2html(mjml)
        except ValueError as exc:
            raise RenderError(f"template {name!r}: MJML does not compile: {exc}") from exc
        if len(html) > self.limits.output:
            raise RenderError(f"template {name!r}: its HTML {too_long(len(html), self.limits.output)}")
        text = text_of(html)
        if to_lead and missing_footer(html, text, context):
            html = with_footer(html, context)
            text = text_of(html)
        return RenderedEmail(subject=rendered_subject, html=html, text=text)

    def check(self, name: str, *, to_lead: bool = False) -> list[str]:
        """Problems of a template, one line each: missing, Jinja syntax, MJML that does not compile;
        `to_lead`: rendered for the sample lead, it does not show the unsubscribe link or the postal address."""
        path = self.path_of(name)
        if path is None:
            return [f"template {name!r} not found in {self.directory} ({name}.mjml)"]
        try:
            self.env.get_template(f"{name}.mjml")
        except TemplateSyntaxError as exc:
            where = Path(exc.filename or path).name
            return [f"template {name!r}: Jinja syntax error at {where}:{exc.lineno}: {exc.message}"]
        except TemplateNotFound as exc:
            return [f"template {name!r}: {exc.name} not found in {self.directory}"]
        except TemplateError as exc:  # the file is too big, or not UTF-8
            return [f"template {name!r}: {exc}"]
        except RecursionError:
            return [f"template {name!r}: nested too deeply for Jinja to read ({{% if %}} in {{% if %}}..., or brackets)"]
        try:
            email = self.render(name, subject="check", context=SAMPLE_CONTEXT)
        except RenderError as exc:
            return [str(exc)]
        missing = missing_footer(email.html, email.text, SAMPLE_CONTEXT) if to_lead else []
        if missing:
            return [f"template {name!r} is sent to leads but shows no {' and no '.join(missing)}: "
                    f"add {'them' if len(missing) > 1 else 'it'}, or extend layout.mjml"]
        return []
