"""The unsubscribe page (`/u/{token}`) as the lead reads it: its three choices and their confirmations, in French or
English (the lead's `language`: French for `fr` and its regional forms, English for any other).

Plain HTML, no script: the form posts `choice` = `all` (everything, as RFC 8058's one-click), `newsletter` (only the
newsletter) or `pause` (three months). The API (relance.api.app) applies the choice; here are only the words.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

from fastapi.responses import HTMLResponse

CHOICES = ("all", "newsletter", "pause")  # what the form posts as `choice`

_WORDS = {
    "fr": {
        "title": "Vos emails",
        "question": "Que souhaitez-vous recevoir à l'adresse <strong>{email}</strong> ?",
        "all": "Me désinscrire de tout : ne plus rien recevoir",
        "newsletter": "Seulement la lettre d'information",
        "pause": "Faire une pause de 3 mois, puis recevoir à nouveau nos emails",
        "submit": "Enregistrer mon choix",
        "now_newsletter": "Aujourd'hui, vous ne recevez que la lettre d'information.",
        "now_paused": "Aujourd'hui, vos emails sont en pause jusqu'au {until}.",
        "done_all_title": "Vous êtes désinscrit",
        "done_all": "{email} ne recevra plus nos emails.",
        "done_newsletter_title": "C'est noté",
        "done_newsletter": "{email} ne recevra plus que notre lettre d'information.",
        "done_pause_title": "C'est noté",
        "done_pause": "{email} ne recevra plus nos emails jusqu'au {until} ; ils reprendront ensuite.",
        "bad_title": "Choisissez une option",
        "bad": "Votre choix n'a pas été compris : rien n'a changé. Choisissez l'une des trois options.",
    },
    "en": {
        "title": "Your emails",
        "question": "What would you like to receive at <strong>{email}</strong>?",
        "all": "Unsubscribe from everything: receive nothing more",
        "newsletter": "Only the newsletter",
        "pause": "Pause for 3 months, then receive our emails again",
        "submit": "Save my choice",
        "now_newsletter": "At the moment you receive only the newsletter.",
        "now_paused": "At the moment your emails are paused until {until}.",
        "done_all_title": "You are unsubscribed",
        "done_all": "{email} will no longer receive our emails.",
        "done_newsletter_title": "Done",
        "done_newsletter": "{email} will only receive our newsletter from now on.",
        "done_pause_title": "Done",
        "done_pause": "{email} will receive none of our emails until {until}; they will start again then.",
        "bad_title": "Please choose an option",
        "bad": "Your choice was not understood: nothing has changed. Please pick one of the three options.",
    },
}
_MONTHS = {"fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
                  "novembre", "décembre"),
           "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                  "November", "December")}


def language_of(language: str | None) -> str:
    """The page's language for a lead's: `fr` (also `fr-CA`, `FR`, and none given: relance's default), else `en`."""
    tag = (language or "fr").strip().lower().replace("_", "-")
    return "fr" if tag == "fr" or tag.startswith("fr-") or not tag else "en"


def _date(when: datetime, lang: str) -> str:
    month = _MONTHS[lang][when.month - 1]
    return f"{when.day} {month} {when.year}" if lang == "fr" else f"{month} {when.day}, {when.year}"


def _html(lang: str, title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang={lang}><meta charset=utf-8><meta name=viewport content='width=device-width'>"
        f"<title>{escape(title)}</title><body style='font-family:sans-serif;max-width:32rem;margin:4rem auto'>"
        f"<h1 style='font-size:1.4rem'>{escape(title)}</h1>{body}</body></html>", status_code=status)


def _form(lang: str, email: str, current: str | None) -> str:
    words = _WORDS[lang]
    options = "".join(
        f"<p><label><input type=radio name=choice value={choice} required{' checked' if choice == current else ''}> "
        f"{escape(words[choice])}</label></p>" for choice in CHOICES)
    return (f"<p>{words['question'].format(email=escape(email))}</p><form method=post>{options}"
            f"<button type=submit style='font-size:1rem;padding:.5rem 1rem'>{escape(words['submit'])}</button></form>")


def choices_page(language: str | None, *, email: str, current: str | None = None, until: datetime | None = None) -> HTMLResponse:
    """The three choices; `current` (`newsletter` or `pause`, with its end) is said and checked."""
    lang = language_of(language)
    words = _WORDS[lang]
    now = ""
    if current == "newsletter":
        now = f"<p><em>{escape(words['now_newsletter'])}</em></p>"
    elif current == "pause" and until is not None:
        now = f"<p><em>{escape(words['now_paused'].format(until=_date(until, lang)))}</em></p>"
    return _html(lang, words["title"], now + _form(lang, email, current))


def done_page(language: str | None, *, email: str, choice: str, until: datetime | None = None) -> HTMLResponse:
    """The confirmation of a choice (`all` also for a lead suppressed already, or by the one-click POST)."""
    lang = language_of(language)
    words = _WORDS[lang]
    text = words[f"done_{choice}"].format(email=email, until=_date(until, lang) if until else "")
    return _html(lang, words[f"done_{choice}_title"], f"<p>{escape(text)}</p>")


def bad_choice_page(language: str | None, *, email: str) -> HTMLResponse:
    """A POST with no choice relance knows: said, nothing changed, the form again (400)."""
    lang = language_of(language)
    words = _WORDS[lang]
    return _html(lang, words["bad_title"], f"<p><strong>{escape(words['bad'])}</strong></p>" + _form(lang, email, None),
                 status=400)
