"""MJML templates with Jinja2 inside: render per recipient, check for the validator.

Templates are `templates/emails/NAME.mjml` and may extend `layout.mjml`. The internal templates
(INTERNAL: staff mail relance writes by itself) ship with relance in `relance/email/defaults/`; a
file of the same name in the templates folder wins. Jinja runs first
(sandboxed, autoescaped), then MJML -> HTML (mjml-python); the text part is derived from that
HTML (see `text_of`), so it says what the HTML says. The subject and the preheader are rendered
in the same sandbox with the same context; a template that does not place `{{ preheader }}` gets
it as its `<mj-preview>`. An email to a lead that shows no unsubscribe link or no postal address
gets relance's footer (`with_footer`); `check(name, to_lead=True)` reports such a template.
Every template gets this context:

- `lead`: email, first_name, last_name, job_title, company, sector, country, score, grade,
  stage, fields (a dict of custom fields)
- `unsubscribe_url` (None in internal emails), `postal_address`, `sender` (display name),
  `preheader` (rendered), `scenario`, `step_id`, `internal`
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lxml.etree
from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound, TemplateSyntaxError, UndefinedError, meta
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape
from mjml import mjml2html

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


class TemplateLibrary:
    """The templates of one folder, compiled once, rendered per recipient."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader([FileSystemLoader(str(self.directory)), FileSystemLoader(str(DEFAULTS_DIR))]), autoescape=True, undefined=StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
            auto_reload=False,  # a library lives for one batch: no need to stat the files at every render
        )
        self.subject_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
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
        return one_line(compiled.render(context))

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
            where = "preheader"
            rendered_preheader = self._line(preheader or context.get("preheader") or "", context)
            context = {**context, "preheader": rendered_preheader}
            where = "subject"
            rendered_subject = self._line(subject, context)
            where = ""
            mjml = self.env.get_template(f"{name}.mjml").render(context)
            if rendered_preheader and ("preheader" not in self.variables(f"{name}.mjml")
                                       or str(escape(rendered_preheader)) not in mjml):  # named, but not shown
                mjml = with_preview(mjml, rendered_preheader)
        except TemplateNotFound as exc:
            raise RenderError(f"template {name!r}: {exc.name} not found in {self.directory}") from exc
        except UndefinedError as exc:
            raise RenderError(f"template {name!r}: {where + ': ' if where else ''}{exc.message} (check the variable names)") from exc
        except TemplateError as exc:
            raise RenderError(f"template {name!r}: {where + ': ' if where else ''}{exc}") from exc
        try:
            html = mjml2html(mjml)
        except ValueError as exc:
            raise RenderError(f"template {name!r}: MJML does not compile: {exc}") from exc
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
        try:
            email = self.render(name, subject="check", context=SAMPLE_CONTEXT)
        except RenderError as exc:
            return [str(exc)]
        missing = missing_footer(email.html, email.text, SAMPLE_CONTEXT) if to_lead else []
        if missing:
            return [f"template {name!r} is sent to leads but shows no {' and no '.join(missing)}: "
                    f"add {'them' if len(missing) > 1 else 'it'}, or extend layout.mjml"]
        return []
