"""Write `leads.csv`, the demo's sample B2B leads: fictional people at fictional companies.

Run once (`python scripts/generate_leads.py`) and commit the CSV: the demo reads the CSV, never
this script, which does not ship with relance. A fixed seed keeps the output identical from one
run to the next, and every address is on a `.example` domain, so no real inbox can ever receive a
demo email.
"""

from __future__ import annotations

import csv
import io
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from relance.store.tables import PROFILE_FIELDS

SEED = 2026
LEADS = 236
COMPANIES = 150
COLUMNS = ["email", *PROFILE_FIELDS]

# country -> (weight, timezone, [(language, weight)])
COUNTRIES = {
    "FR": (42, "Europe/Paris", [("fr", 1)]),
    "BE": (12, "Europe/Brussels", [("fr", 6), ("nl", 4)]),
    "CH": (10, "Europe/Zurich", [("fr", 5), ("de", 5)]),
    "CA": (10, "America/Montreal", [("fr", 1)]),
    "DE": (9, "Europe/Berlin", [("de", 1)]),
    "ES": (7, "Europe/Madrid", [("es", 1)]),
    "IT": (7, "Europe/Rome", [("it", 1)]),
    "LU": (3, "Europe/Luxembourg", [("fr", 1)]),
}

# (country, language) -> (female first names, male first names, last names)
NAMES = {
    ("FR", "fr"): (
        "Camille Léa Manon Chloé Emma Sarah Julie Pauline Marie Claire Inès Élodie Sandrine Nathalie "
        "Céline Aurélie Sophie Amandine Yasmine Hélène Margaux Lucie".split(),
        "Thomas Nicolas Julien Maxime Antoine Alexandre Guillaume Romain Hugo Lucas Pierre Karim Mehdi "
        "Olivier Sébastien François Benoît Jérôme Arnaud Bastien Loïc".split(),
        "Martin Bernard Petit Robert Richard Durand Dubois Moreau Laurent Simon Michel Lefèvre Leroy Roux "
        "David Bertrand Morel Fournier Girard Bonnet Dupont Lambert Fontaine Rousseau Vincent Faure André "
        "Mercier Blanc Guérin Boyer Garnier Chevalier Legrand Perrin Robin Clément Morin Henry Roussel "
        "Masson Benali Nguyen Haddad Lemaire Caron Marchand".split() + ["Le Gall", "Da Silva"],
    ),
    ("BE", "fr"): (
        "Charlotte Nathalie Aurore Manon Justine Valérie Amélie Pauline".split(),
        "Maxime Arnaud Cédric Quentin Grégory Nicolas Damien Thibault".split(),
        "Dupont Lambert Dubois Lejeune Renard Leclercq Dumont Hermans Delvaux Collignon Gilson Lemaire".split(),
    ),
    ("BE", "nl"): (
        "Lotte Elke Sofie An Griet Lien Ellen Annelies".split(),
        "Pieter Jeroen Wouter Bart Koen Stijn Tom Joris".split(),
        "Peeters Janssens Maes Jacobs Willems Claes Goossens Wouters Mertens Vermeulen".split() + ["De Smet", "Van Damme"],
    ),
    ("CH", "fr"): (
        "Aline Mélanie Coralie Sandra Laetitia Joëlle".split(),
        "Yannick Cédric Loïc Fabien Raphaël Gilles".split(),
        "Favre Rochat Perrin Bonvin Monnier Rey Blanc Chappuis Jaquet Pittet".split(),
    ),
    ("CH", "de"): (
        "Nicole Andrea Corinne Martina Sandra Barbara".split(),
        "Reto Urs Beat Daniel Marco Lukas".split(),
        "Müller Meier Schmid Keller Weber Huber Gerber Baumann Brunner Steiner".split(),
    ),
    ("CA", "fr"): (
        "Marie-Ève Geneviève Isabelle Catherine Mélanie Josée Audrey Valérie Julie".split(),
        "Jean-François Mathieu Simon Étienne Marc-André Sébastien Alexandre Félix Olivier".split(),
        "Tremblay Gagnon Roy Côté Bouchard Gauthier Morin Lavoie Fortin Gagné Ouellet Pelletier Bélanger "
        "Lévesque Bergeron".split(),
    ),
    ("DE", "de"): (
        "Anna Katharina Julia Sabine Lena Jana Miriam Stefanie".split(),
        "Lukas Felix Jonas Tobias Stefan Jürgen Florian Matthias".split(),
        "Schneider Fischer Wagner Becker Hoffmann Schäfer Koch Richter Klein Wolf Schröder Neumann "
        "Zimmermann Krüger".split(),
    ),
    ("ES", "es"): (
        "Lucía María Carmen Laura Marta Elena Núria Cristina".split(),
        "Javier Pablo Alejandro Sergio Daniel Jordi Álvaro Iñaki".split(),
        "García Martínez López Sánchez Pérez Gómez Fernández Ruiz Díaz Moreno Muñoz Álvarez Romero".split(),
    ),
    ("IT", "it"): (
        "Giulia Francesca Chiara Alessia Sara Federica Valentina Elisa".split(),
        "Marco Luca Andrea Matteo Davide Lorenzo Alessandro Stefano".split(),
        "Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti".split(),
    ),
    ("LU", "fr"): (
        "Claire Anne Laura Sophie Carole Martine".split(),
        "Tom Luc Marc Paul Gilles Yves".split(),
        "Schmit Muller Weber Hoffmann Wagner Thill Kremer Reuter Schroeder Faber".split(),
    ),
}

# language -> [(masculine title, feminine title, weight)]: seniority varies so fit grades vary
TITLES = {
    "fr": [
        ("Directeur marketing", "Directrice marketing", 8), ("Directeur commercial", "Directrice commerciale", 4),
        ("Head of Growth", "Head of Growth", 5), ("CMO", "CMO", 4), ("CEO", "CEO", 2),
        ("Responsable acquisition", "Responsable acquisition", 7),
        ("Responsable marketing digital", "Responsable marketing digital", 7), ("Responsable CRM", "Responsable CRM", 3),
        ("Marketing manager", "Marketing manager", 5), ("Chargé de communication", "Chargée de communication", 6),
        ("Chargé de marketing", "Chargée de marketing", 5), ("Office manager", "Office manager", 3),
        ("Stagiaire marketing", "Stagiaire marketing", 3), ("Assistant commercial", "Assistante commerciale", 3),
        ("Business developer", "Business developer", 3), ("Fondateur", "Fondatrice", 2), ("Gérant", "Gérante", 2),
        ("Growth hacker", "Growth hacker", 2),
    ],
    "nl": [
        ("Marketingdirecteur", "Marketingdirectrice", 4), ("Head of Marketing", "Head of Marketing", 3),
        ("Marketing manager", "Marketing manager", 4), ("Communicatiemedewerker", "Communicatiemedewerker", 3),
        ("Sales manager", "Sales manager", 2), ("Zaakvoerder", "Zaakvoerster", 1), ("Stagiair marketing", "Stagiair marketing", 1),
    ],
    "de": [
        ("Leiter Marketing", "Leiterin Marketing", 5), ("Head of Growth", "Head of Growth", 3),
        ("Marketing Manager", "Marketing Managerin", 5), ("Geschäftsführer", "Geschäftsführerin", 2), ("CMO", "CMO", 2),
        ("Referent Online-Marketing", "Referentin Online-Marketing", 3), ("Vertriebsleiter", "Vertriebsleiterin", 2),
        ("Werkstudent Marketing", "Werkstudentin Marketing", 2), ("Office Manager", "Office Managerin", 1),
    ],
    "es": [
        ("Director de marketing", "Directora de marketing", 5), ("Responsable de marketing digital", "Responsable de marketing digital", 4),
        ("Head of Growth", "Head of Growth", 2), ("CMO", "CMO", 2), ("Técnico de marketing", "Técnica de marketing", 3),
        ("Director comercial", "Directora comercial", 2), ("Country manager", "Country manager", 2),
        ("Becario de marketing", "Becaria de marketing", 1),
    ],
    "it": [
        ("Direttore marketing", "Direttrice marketing", 5), ("Responsabile marketing", "Responsabile marketing", 4),
        ("Marketing manager", "Marketing manager", 4), ("Head of Growth", "Head of Growth", 2), ("CMO", "CMO", 2),
        ("Addetto comunicazione", "Addetta comunicazione", 3), ("Amministratore delegato", "Amministratrice delegata", 1),
        ("Stagista marketing", "Stagista marketing", 1),
    ],
}

# sector -> (weight, revenue range in euros, company-name endings per language)
SECTORS = {
    "saas": (30, (200_000, 80_000_000), {"*": ["", " Software", " Cloud", " Labs", " Tech"]}),
    "industrie": (20, (2_000_000, 500_000_000), {
        "fr": [" Industries", " Mécanique", " Composites", " Plasturgie"], "nl": [" Industries", " Metaal"],
        "de": [" Maschinenbau", " Werke", " Industrietechnik"], "es": [" Industrial", " Componentes"],
        "it": [" Meccanica", " Industrie"]}),
    "services": (20, (200_000, 50_000_000), {
        "fr": [" Conseil", " Services", " Partenaires"], "nl": [" Advies", " Services"],
        "de": [" Beratung", " Consulting"], "es": [" Consultores", " Servicios"], "it": [" Consulenza", " Servizi"]}),
    "retail": (12, (1_000_000, 300_000_000), {
        "fr": [" Distribution", " Boutiques", " Maison"], "nl": [" Retail", " Winkels"],
        "de": [" Handel", " Markt"], "es": [" Distribución", " Tiendas"], "it": [" Distribuzione", " Negozi"]}),
    "banque": (8, (20_000_000, 500_000_000), {
        "fr": [" Finance", " Crédit", " Banque Privée"], "nl": [" Bank", " Finance"],
        "de": [" Bank", " Finanz"], "es": [" Banca", " Finanzas"], "it": [" Banca", " Finanza"]}),
    "santé": (10, (1_000_000, 200_000_000), {
        "fr": [" Santé", " Médical", " Pharma"], "nl": [" Medical", " Zorg"],
        "de": [" Medizintechnik", " Pharma", " Gesundheit"], "es": [" Salud", " Médica"], "it": [" Salute", " Medicale"]}),
}

SOURCES = {"site-web": 30, "webinar": 18, "linkedin-ads": 18, "salon-vivatech": 12, "import-crm": 12, "partenaire": 10}

# invented brand stems: syllables that sound like company names but name nobody
_HEADS = "Al Bri Ca Del Eno Fa Gal Hy Iso Ka Lu Mo Ne Or Pa Qui Ro Sy Ta Ul Ve Xa Ze Vo Ni".split()
_MIDDLES = "ra li va no ti xo ma ri de lo ne sa".split()
_TAILS = "a ix on is ia eo um ys an o el ea".split()


@dataclass(frozen=True)
class Company:
    name: str
    slug: str
    country: str
    language: str
    sector: str
    revenue: int | None


def slug(text: str) -> str:
    """ASCII, lower-case, dashes: `Marie-Ève Côté` -> `marie-eve-cote`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text).strip("-")


def _weighted(rng: random.Random, weights: dict) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _revenue(rng: random.Random, low: int, high: int) -> int:
    """Log-uniform in [low, high], rounded to two significant digits like a CRM field."""
    value = low * (high / low) ** rng.random()
    magnitude = 10 ** max(len(str(int(value))) - 2, 0)
    return int(round(value / magnitude) * magnitude)


def _companies(rng: random.Random) -> list[Company]:
    companies: list[Company] = []
    taken: set[str] = set()
    while len(companies) < COMPANIES:
        country = _weighted(rng, {code: spec[0] for code, spec in COUNTRIES.items()})
        language = _weighted(rng, dict(COUNTRIES[country][2]))
        sector = _weighted(rng, {name: spec[0] for name, spec in SECTORS.items()})
        stem = rng.choice(_HEADS) + rng.choice(_MIDDLES) + rng.choice(_TAILS)
        if re.search(r"([aeiouy])\1", stem.lower()):
            continue  # "Sytiia" reads like a typo, not a brand
        endings = SECTORS[sector][2]
        name = stem + rng.choice(endings.get(language, endings.get("*", [""])))
        if slug(name) in taken:
            continue
        taken.add(slug(name))
        revenue = None if rng.random() < 0.08 else _revenue(rng, *SECTORS[sector][1])
        companies.append(Company(name, slug(name), country, language, sector, revenue))
    return companies


def _email(rng: random.Random, first: str, last: str, domain: str, taken: set[str]) -> str:
    first_s, last_s = slug(first), slug(last).replace("-", "")
    style = rng.choices(["first.last", "f.last", "flast", "first"], weights=[70, 15, 10, 5])[0]
    local = {"first.last": f"{first_s}.{last_s}", "f.last": f"{first_s[0]}.{last_s}",
             "flast": f"{first_s[0]}{last_s}", "first": first_s}[style]
    candidates = [local, f"{first_s}.{last_s}"] + [f"{first_s}.{last_s}{n}" for n in range(2, 50)]
    for candidate in candidates:
        address = f"{candidate}@{domain}.example"
        if address not in taken:
            taken.add(address)
            return address
    raise RuntimeError(f"no free address for {first} {last} at {domain}")


def generate(seed: int = SEED, count: int = LEADS) -> list[dict[str, str]]:
    """The sample leads as CSV rows (strings), the same for the same seed."""
    rng = random.Random(seed)
    companies = _companies(rng)
    # a few companies have several contacts, as in a real CRM
    company_weights = [rng.choice([1, 1, 1, 2, 3]) for _ in companies]
    taken: set[str] = set()
    rows: list[dict[str, str]] = []
    for _ in range(count):
        company = rng.choices(companies, weights=company_weights)[0]
        language = company.language if rng.random() < 0.9 else _weighted(rng, dict(COUNTRIES[company.country][2]))
        female, male, last_names = NAMES[(company.country, language)]
        is_female = rng.random() < 0.5
        first = rng.choice(female if is_female else male)
        last = rng.choice(last_names)
        titles = TITLES[language]
        masculine, feminine, _ = rng.choices(titles, weights=[t[2] for t in titles])[0]
        source = _weighted(rng, SOURCES)
        if source == "salon-vivatech" and company.country not in ("FR", "BE", "CH", "LU"):
            source = "linkedin-ads"  # VivaTech is in Paris: the visitors are mostly from nearby
        rows.append({
            "email": _email(rng, first, last, company.slug, taken),
            "first_name": first,
            "last_name": last,
            "job_title": feminine if is_female else masculine,
            "company": company.name,
            "sector": company.sector,
            "company_revenue": "" if company.revenue is None else str(company.revenue),
            "country": company.country,
            "timezone": COUNTRIES[company.country][1],
            "language": language,
            "source": source,
        })
    return rows


def to_csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main() -> None:
    target = Path(__file__).resolve().parents[1] / "relance" / "demo" / "leads.csv"
    target.write_text(to_csv(generate()), encoding="utf-8")
    print(f"wrote {LEADS} leads to {target}")


if __name__ == "__main__":
    main()
