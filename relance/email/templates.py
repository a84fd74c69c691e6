"""MJML templates with Jinja2 inside: render per recipient, check for the validator.

Templates are `templates/emails/NAME.mjml` and may extend `layout.mjml`. Jinja runs first
(sandboxed, autoescaped), then MJML -> HTML (mjml-python); the text part is derived from the
same rendered MJML's content (html-text, links written out as "label (url)"), not from the
HTML's layout tables: the same words at a tenth of the cost (see `text_of`). Every template gets this context:

- `lead`: email, first_name, last_name, job_title, company, sector, country, score, grade,
  stage, fields (a dict of custom fields)
- `unsubscribe_url`, `postal_address`, `sender` (display name), `preheader`,
  `scenario`, `step_id`
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import html_text
import lxml.html
from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
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
}


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


_MJ_HEAD = re.compile(r"<mj-head\b.*?</mj-head>", re.S | re.I)
_MJ_LINK = re.compile(r"<mj-[a-z-]+\b[^>]*?\bhref=\"([^\"]*)\"[^>]*>(.*?)</mj-[a-z-]+>", re.S | re.I)
_MJ_BLOCK = re.compile(r"<(/?)mj-(?:text|table|raw|hero|accordion-text|accordion-title|navbar|social)\b[^>]*>", re.I)
_MJ_ANY = re.compile(r"</?mj(?:ml|-[a-z-]+)\b[^>]*>", re.I)


def content_html(mjml: str) -> str:
    """The content of rendered MJML as plain HTML: each text block a paragraph, each button or
    link element (mj-button, mj-navbar-link, mj-social-element) a linked paragraph, layout and head gone."""
    body = _MJ_HEAD.sub("", mjml)
    body = _MJ_LINK.sub(lambda m: f'<p><a href="{m.group(1)}">{m.group(2).strip()}</a></p>', body)
    body = _MJ_BLOCK.sub(lambda m: f"<{m.group(1)}p>", body)
    return _MJ_ANY.sub("", body)


def text_of(mjml: str) -> str:
    """The text part: the rendered MJML's content as text, each link followed by its address."""
    tree = lxml.html.fragment_fromstring(content_html(mjml), create_parent="div")
    for link in tree.iter("a"):
        href = link.get("href")
        if href and not href.startswith("#"):
            link.tail = f" ({href})" + (link.tail or "")
    return html_text.etree_to_text(tree).strip() + "\n"


class TemplateLibrary:
    """The templates of one folder, compiled once, rendered per recipient."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(self.directory)), autoescape=True, undefined=StrictUndefined,
            trim_blocks=True, lstrip_blocks=True,
            auto_reload=False,  # a library lives for one batch: no need to stat the files at every render
        )
        self.subject_env = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
        self._subjects: dict[str, Any] = {}

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.mjml") if p.stem != "layout")

    def _subject(self, source: str, context: dict[str, Any]) -> str:
        compiled = self._subjects.get(source)
        if compiled is None:
            compiled = self._subjects[source] = self.subject_env.from_string(source)
        return one_line(compiled.render(context))

    def render(self, name: str, *, subject: str, context: dict[str, Any], preheader: str | None = None) -> RenderedEmail:
        """Jinja, then MJML, then the text part; errors name the template and what went wrong."""
        context = {**context, "preheader": preheader or context.get("preheader") or ""}
        try:
            mjml = self.env.get_template(f"{name}.mjml").render(context)
            rendered_subject = self._subject(subject, context)
        except TemplateNotFound as exc:
            raise RenderError(f"template {name!r}: {exc.name} not found in {self.directory}") from exc
        except UndefinedError as exc:
            raise RenderError(f"template {name!r}: {exc.message} (check the variable names)") from exc
        except TemplateError as exc:
            raise RenderError(f"template {name!r}: {exc}") from exc
        try:
            html = mjml2html(mjml)
        except ValueError as exc:
            raise RenderError(f"template {name!r}: MJML does not compile: {exc}") from exc
        return RenderedEmail(subject=rendered_subject, html=html, text=text_of(mjml))

    def check(self, name: str) -> list[str]:
        """Problems of a template, one line each: missing, Jinja syntax, MJML that does not compile."""
        path = self.directory / f"{name}.mjml"
        if not path.is_file():
            return [f"template {name!r} not found in {self.directory} ({name}.mjml)"]
        try:
            self.env.get_template(f"{name}.mjml")
        except TemplateSyntaxError as exc:
            where = Path(exc.filename or path).name
            return [f"template {name!r}: Jinja syntax error at {where}:{exc.lineno}: {exc.message}"]
        except TemplateNotFound as exc:
            return [f"template {name!r}: {exc.name} not found in {self.directory}"]
        try:
            self.render(name, subject="check", context=SAMPLE_CONTEXT)
        except RenderError as exc:
            return [str(exc)]
        return []
