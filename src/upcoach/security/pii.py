"""PII detection and reversible redaction for prompts that may leave the machine.

`detect(text)` finds personal data with offline rules only (regexes, python-stdnum's check digits, the
`phonenumbers` library and a shipped list of given names); no model and no network. `Redactor` replaces each
finding with a placeholder `[TYPE_N]` that is stable for the whole conversation, and `rehydrate` puts the values back
into the cloud model's answer. The values live only in the Redactor's mapping: `Entity.__repr__` and
`Redactor.counts` never show them.

Types, most specific first (this order breaks ties when two findings cover the same span; otherwise the longest
finding wins): SECRET, URL_TOKEN, CARD, IBAN, NATIONAL_ID (the check-digit identifiers: security/pii_ids.py), then
the values found by their label (security/labels.py: PASSWORD, PIN, PASSPORT, DRIVER_LICENSE, TAX_ID, BANK_ACCOUNT,
ROUTING_NUMBER, PATIENT_ID, POLICY_NUMBER, EMPLOYEE_ID, MEMBER_ID, CUSTOMER_ID, LICENSE_PLATE, USERNAME,
SECURITY_ANSWER), EMAIL, IP, DOB, PHONE, ADDRESS, PERSON.

Guarantees: `rehydrate(redact(t)) == t` for every text, including texts that already contain placeholder-like tokens
(those are redacted like any other value), and placeholders are never reused for a different value. Errors are not
swallowed: the router treats any exception as "answer locally", which is the fail-closed choice; a message with more
than MAX_PHONE_SCAN characters of digit runs raises ValueError on purpose rather than take seconds to scan.

Known gaps (measured figures in docs/security.md): names are found only when capitalised and either in the list, or
after an honorific or a cue ("my manager X", "named X"); street addresses need a street word and a house number;
phone numbers must be valid for one of the listed regions or carry a "+" country code.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import parse_qsl, unquote, urlsplit

import phonenumbers

from upcoach.security import pii_ids
from upcoach.security.labels import SECRET_VALUE, find_labelled
from upcoach.security.labels import TYPES as LABELLED_TYPES
from upcoach.security.textnorm import View, view

TYPES = (
    "SECRET", "URL_TOKEN", "CARD", "IBAN", "NATIONAL_ID", *(t for t in LABELLED_TYPES if t != "NATIONAL_ID"), "EMAIL",
    "IP", "DOB", "PHONE", "ADDRESS", "PERSON",
)  # fmt: skip
_SPECIFICITY = {t: len(TYPES) - i for i, t in enumerate(TYPES)}


@dataclass(frozen=True, repr=False)
class Entity:
    type: str
    start: int
    end: int
    value: str

    def __repr__(self) -> str:
        # Entities end up in logs and test failure messages; the value must not.
        return f"Entity(type={self.type!r}, start={self.start}, end={self.end}, value=<{len(self.value)} chars>)"


# --- detectors: each yields candidate entities; overlaps are resolved afterwards ---------------------------------

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")


def _emails(text: str) -> Iterator[Entity]:
    for m in _EMAIL.finditer(text):
        yield Entity("EMAIL", m.start(), m.end(), m.group())


_PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "PT", "NL", "IN", "BR")
_PHONE_SEGMENT = re.compile(r"[+(]?\d[\d\s()./-]*\d")
# Above this many characters of digit runs in one message, scanning gets slow: refuse, so the caller keeps it local.
MAX_PHONE_SCAN = 5000
_PHONE_RUN = re.compile(r"(?<![\w-])[+(]?\d(?:[\d().-]| (?! ))+\d(?!\w)")  # two spaces end a run
_DATE_SHAPE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{1,4}|\d{1,2}:\d{2}")


def _valid_phone(candidate: str) -> bool:
    if _DATE_SHAPE.fullmatch(candidate):
        return False
    for region in _PHONE_REGIONS:
        try:
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate, region)):
                return True
        except phonenumbers.NumberParseException:
            continue
    return False


def _phones(text: str, covered: Sequence[Entity] = ()) -> Iterator[Entity]:
    spans: set[tuple[int, int]] = set()
    # The matcher is slow (it re-parses every candidate once per region), so it only sees the digit runs that could
    # hold a number, in pieces of bounded size.
    segments = [m for m in _PHONE_SEGMENT.finditer(text) if sum(ch.isdigit() for ch in m.group()) >= 7]
    if sum(m.end() - m.start() for m in segments) > MAX_PHONE_SCAN:
        raise ValueError(f"more than {MAX_PHONE_SCAN} characters of digits to scan for phone numbers")
    for segment in segments:
        if _DATE_SHAPE.fullmatch(segment.group()) or any(
            c.start <= segment.start() and segment.end() <= c.end for c in covered
        ):
            continue  # a number inside a card, IBAN or ID found already would lose to it anyway
        # A little context on each side: the matcher rejects numbers glued to letters ("INV-2024-00917").
        for start in range(max(0, segment.start() - 10), segment.end(), 200):
            end = min(len(text), segment.end() + 10, start + 250)  # overlapping pieces: no number is cut in two
            digits = {k for k in range(max(start, segment.start()), min(end, segment.end())) if text[k].isdigit()}
            # "+"-prefixed numbers are found by every region; each region adds its own national formats. Stop as
            # soon as every digit of the piece belongs to a number.
            for region in _PHONE_REGIONS:
                for m in phonenumbers.PhoneNumberMatcher(text[start:end], region, leniency=phonenumbers.Leniency.VALID):
                    if not _DATE_SHAPE.fullmatch(m.raw_string):
                        spans.add((start + m.start, start + m.end))
                        digits -= set(range(start + m.start, start + m.end))
                if not digits:
                    break
    # The matcher gives up on numbers separated only by spaces ("+44 20 7946 0958 030 12345678"): in each digit run
    # it left alone, look for the shortest valid number from each place a number can start (the run's start, "+", "("
    # or a trunk "0") to a place where one can end (the run's end, or just before such a start).
    for run in _PHONE_RUN.finditer(text):
        if any(s <= run.start() and run.end() <= e for s, e in spans) or run.end() - run.start() > 200:
            continue  # covered, or too long to be a list of phone numbers (and too slow to search)
        words = [(run.start() + m.start(), run.start() + m.end()) for m in re.finditer(r"\S+", run.group())]
        starts = [k == 0 or text[words[k][0]] in "+(0" for k in range(len(words))] + [True]
        i = 0
        while i < len(words):
            for j in range(i + 1, min(len(words), i + 6) + 1):
                s, e = words[i][0], words[j - 1][1]
                if not (starts[i] and starts[j]) or any(s < e2 and s2 < e for s2, e2 in spans):
                    continue
                if 7 <= sum(ch.isdigit() for ch in text[s:e]) <= 15 and _valid_phone(text[s:e]):
                    spans.add((s, e))
                    i = j
                    break
            else:
                i += 1
    for s, e in sorted(spans):
        yield Entity("PHONE", s, e, text[s:e])


_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?:\d{1,3}(?:\.\d{1,3}){3})?(?![\w:])")


def _ips(text: str) -> Iterator[Entity]:
    for m in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield Entity("IP", m.start(), m.end(), m.group())
    for m in _IPV6.finditer(text):
        candidate = m.group()
        if not any(ch not in ":" for ch in candidate):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield Entity("IP", m.start(), m.end(), candidate)


_URL = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'`]+")
_SENSITIVE_KEY = re.compile(
    r"(?i)token|secret|passw|pwd|key$|signature|credential|session|jwt|bearer|"
    r"^(?:key|sig|sid|pass|auth|code|otp|ticket|hmac)$"
)


def _url_tokens(text: str) -> Iterator[Entity]:
    for m in _URL.finditer(text):
        url = m.group().rstrip(".,;:!?'\"")
        while url.endswith((")", "]", "}")) and url.count(url[-1]) > url.count({")": "(", "]": "[", "}": "{"}[url[-1]]):
            url = url[:-1]
        try:
            parts = urlsplit(url if "://" in url else "http://" + url)
            has_password = parts.password is not None
        except ValueError:
            # A URL that does not even parse is not worth the risk of sending.
            yield Entity("URL_TOKEN", m.start(), m.start() + len(url), url)
            continue
        params = parse_qsl(parts.query) + parse_qsl(parts.fragment)
        params += [(k, v) for k, _, v in (p.partition("=") for p in parts.path.split(";")[1:])]  # ;jsessionid=
        if has_password or any(v and _SENSITIVE_KEY.search(unquote(k)) for k, v in params):
            yield Entity("URL_TOKEN", m.start(), m.start() + len(url), url)


_SECRET_PATTERNS = tuple(
    re.compile(p)
    for p in (
        # A pasted key without its END line is redacted to the end of the message.
        r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}\b",
        r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b",
        r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
        r"\bglpat-[A-Za-z0-9_-]{20,}(?![\w-])",
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}(?![\w-])",
        r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}(?![\w-])",
        r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}\b",
        r"\bAIza[0-9A-Za-z_-]{35}(?![\w-])",
        r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}(?![\w-])",
        r"\bhf_[A-Za-z0-9]{30,}\b",
        r"\bnpm_[A-Za-z0-9]{36}\b",
    )
)
_SECRET_VALUE = rf"[\"']?(?P<v>{SECRET_VALUE})"
# Passwords and PINs are values introduced by a label like any other: security/labels.py finds them.
_SECRET_ASSIGN = re.compile(
    r"(?i)\b(?P<k>api[_ -]?key|apikey|secret[_ -]?key|access[_ -]?key(?:[_ -]?id)?|client[_ -]?secret|"
    r"(?:auth|access|bearer)[_ -]?token|private[_ -]?key|aws_secret_access_key|secret|token)[\"']?\s*"
    r"(?P<sep>:|=|=>)\s*" + _SECRET_VALUE
)
# Bare "secret:"/"token:" also start prose ("the secret: start small"): there the value must look machine-made.
_WEAK_KEYS = frozenset(("secret", "token"))
_MACHINE_MADE = re.compile(r"^(?=.*[\d_/+=-]).{8,}$")


def _secrets(text: str) -> Iterator[Entity]:
    for pattern in _SECRET_PATTERNS:
        for m in pattern.finditer(text):
            yield Entity("SECRET", m.start(), m.end(), m.group())
    for m in _SECRET_ASSIGN.finditer(text):
        weak = m.group("k").lower() in _WEAK_KEYS and m.group("sep") == ":"
        if len(m.group("v")) >= 3 and not (weak and not _MACHINE_MADE.match(m.group("v"))):
            yield Entity("SECRET", m.start("v"), m.end("v"), m.group("v"))


_CAP = r"[A-ZÀ-ÖØ-Þ][\w'’-]*"
_PARTICLE = r"(?:de la|de las|de los|de|del|della|delle|dei|degli|di|da|do|das|dos|du|des|d'|l')"
_CAPS = rf"{_CAP}(?:[ -](?:{_PARTICLE}\s?)?{_CAP}){{0,3}}"
_POSTCODE = (  # UK, PT, NL, US state + ZIP, five digits (DE, FR, ES, IT, US)
    r"(?:[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}|\d{4}-\d{3}|\d{4} ?[A-Z]{2}(?![a-z])|[A-Z]{2} \d{5}(?:-\d{4})?|"
    r"\d{5}(?:-\d{4})?)"
)
_ADDRESS_PATTERNS = tuple(
    re.compile(p)
    for p in (
        # English: "221B Baker Street", "Flat 2, 15 High St."
        rf"(?<!\w)(?:(?:Flat|Apt\.?|Apartment|Unit|Suite) \w+,? )?\d{{1,5}}[A-Za-z]?,? (?:{_CAP} ){{1,4}}"
        r"(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Boulevard|Blvd|Court|Ct|Place|Pl|Square|Sq|Terrace|Way|Close|"
        r"Crescent|Gardens|Parkway|Pkwy|Highway|Hwy|Row|Mews|Grove|Walk)\b\.?",
        # German and Dutch: "Hauptstraße 5", "Berliner Straße 12a", "Prinsengracht 263", "Am Markt 3"
        r"(?<!\w)(?:[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|damm|"
        r"chaussee|pfad|straat|gracht|laan|plein|kade|dijk|singel|steeg)|(?:[A-ZÄÖÜ][\wäöüß-]*|Am|An der|Auf dem|Im)"
        r" (?:Straße|Strasse|Str\.|Weg|Gasse|Platz|Allee|Ring|Damm|Ufer|Markt)) ?\d{1,4}(?: ?[a-zA-Z](?!\w))?"
        r"(?:[-/]\d{1,4})?(?!\w)",
        # French: "12 rue de la Paix", "3 bis avenue Victor Hugo"
        r"(?<!\w)\d{1,4}(?: ?(?:bis|ter|[A-Da-d])(?!\w))?,? (?i:rue|avenue|av\.|boulevard|bd|place|chemin|allée|"
        rf"impasse|quai|route|cours|passage|square)(?: (?:de la|de l'|du|des|de|d'|l'))? ?{_CAPS}",
        # Spanish, Italian, Portuguese: "Calle Mayor 3", "Via Roma 10", "Rua Augusta 100", "Calle de Alcalá, 45"
        r"(?<!\w)(?:(?i:calle|avenida|avda\.|paseo|plaza|camino|carrera|ronda|travesía|glorieta|viale|piazza|piazzale|"
        r"corso|largo|vicolo|lungomare|rua|travessa|praça|estrada|alameda|rodovia)|C/|Av\.|Via|(?:(?<=\bin )|"
        r"(?<=: ))via)"
        rf" (?:(?:de la|de los|de las|del|de|della|delle|dei|degli|di|da|do|das|dos) )?{_CAPS},? (?:n[º°o.]? ?)?"
        r"\d{1,5}[A-Za-z]?(?:/[A-Za-z0-9]+)?(?!\w)",
    )
)
# A postcode (and its city) right after a street, in either order: "..., 10115 Berlin", "..., London NW1 6XE".
_ADDRESS_TAIL = re.compile(rf",? ?(?:{_POSTCODE}(?: {_CAP}(?:[ -]{_CAP})?)?|, {_CAP}(?: {_CAP})?,? {_POSTCODE})(?!\w)")


def _addresses(text: str) -> Iterator[Entity]:
    for pattern in _ADDRESS_PATTERNS:
        for m in pattern.finditer(text):
            end = m.end()
            tail = _ADDRESS_TAIL.match(text, end)
            if tail:
                end = tail.end()
            yield Entity("ADDRESS", m.start(), end, text[m.start() : end])


_MONTHS = sorted(
    set(
        "january february march april may june july august september october november december jan feb mar apr jun "
        "jul aug sep sept oct nov dec januar jänner februar märz maerz mai juni juli oktober dezember janvier février "
        "fevrier mars avril juin juillet août aout septembre octobre novembre décembre decembre enero febrero marzo "
        "abril mayo junio julio agosto septiembre setiembre octubre noviembre diciembre gennaio febbraio aprile "
        "maggio giugno luglio settembre ottobre dicembre janeiro fevereiro março maio junho julho setembro outubro "
        "novembro dezembro januari februari maart mei augustus".split()
    ),
    key=len,
    reverse=True,
)
_MONTH = "(?:" + "|".join(_MONTHS) + r")\.?"
_DAY = r"\d{1,2}(?:st|nd|rd|th|er|º|°|\.)?"
_YEAR = r"(?:19|20)\d{2}"
_FULL_DATE = re.compile(
    rf"(?i)(?<![\w.])(?:\d{{1,2}}([./-])\d{{1,2}}\1(?:{_YEAR}|\d{{2}})|{_YEAR}([./-])\d{{1,2}}\2\d{{1,2}}|"
    rf"{_DAY} (?:of |de )?{_MONTH},? (?:de |del )?{_YEAR}|{_MONTH} {_DAY},? {_YEAR})(?!\w|\.\d)"
)
_PARTIAL_DATE = re.compile(rf"(?i)(?:{_DAY} (?:of |de )?{_MONTH}(?: {_YEAR})?|{_MONTH} (?:{_DAY}|{_YEAR}))(?!\w)")
_DOB_CUE = re.compile(
    r"(?i)(?:\bborn|\bdate of birth|\bbirth ?date|\bbirthday|\bd\.?o\.?b\b\.?|\bgeboren|\bgeburtsdatum|\bgeburtstag|"
    r"\bgeb\.|\bnée?\b|\bnac[ií]\b|\bnasci\b|\bdate de naissance|\banniversaire|\bnacid[oa]|\bfecha de nacimiento|"
    r"\bcumpleaños|\bnat[oa]\b|"
    r"\bdata di nascita|\bcompleanno|\bnascid[oa]|\bdata de nascimento|\baniversário|\bgeboortedatum)"
)
_DOB_CUE_AFTER = re.compile(r"(?i)\W{0,3}(?:geboren|geb\.|born|nacid[oa]|née?|nat[oa]|nascid[oa])\b")
_DOB_GAP = re.compile(r"(?i)[\s:=,-]*(?:(?:is|was|am|le|el|il|em|on|op|in|en|à|a|the|de|den)\s+)*")


def _dobs(text: str) -> Iterator[Entity]:
    for m in _FULL_DATE.finditer(text):
        if _DOB_CUE_AFTER.match(text, m.end()):  # "am 03.03.1990 geboren"
            yield Entity("DOB", m.start(), m.end(), m.group())
    for cue in _DOB_CUE.finditer(text):
        gap = _DOB_GAP.match(text, cue.end())
        start = gap.end() if gap else cue.end()
        m = _FULL_DATE.match(text, start) or _PARTIAL_DATE.match(text, start)
        if m:
            yield Entity("DOB", m.start(), m.end(), m.group())
            continue
        # "date of birth ... 03/03/1990" further on in the same clause.
        window = text[cue.end() : cue.end() + 40].split(".\n")[0]
        m = _FULL_DATE.search(window)
        if m:
            yield Entity("DOB", cue.end() + m.start(), cue.end() + m.end(), m.group())


# --- persons -----------------------------------------------------------------------------------------------------


@cache
def _name_tiers() -> dict[str, str]:
    """Given name -> "" (enough alone), "~" (also a word: needs mid-sentence or a cue), "!" (needs a cue)."""
    text = resources.files("upcoach.security").joinpath("data/names.txt").read_text(encoding="utf-8")
    tiers: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            tiers[line.lstrip("~!")] = line[0] if line[0] in "~!" else ""
    return tiers


_WORD = re.compile(r"(?<!\w)[^\W\d_]+(?:['’-][^\W\d_]+)*(?!\w)")
_HONORIFIC = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Herr|Frau|Madame|Mme|Monsieur|Mlle|Mademoiselle|Señor|Señora|Señorita|Sr|Sra|"
    r"Srta|Doña|Signor|Signora|Signorina|Sig|Sig\.ra|Dott|Dott\.ssa|Senhor|Senhora|Dona|Meneer|Mevrouw|Mevr|Dhr|Shri|"
    r"Smt|Sir|Dame|Lady|Lord)\.?|\bM\.) $"
)
_RELATIONS = (
    r"manager|boss|supervisor|lead|team ?lead|director|ceo|cto|founder|colleague|co-?worker|teammate|report|intern|"
    r"mentor|coach|client|customer|therapist|doctor|wife|husband|partner|spouse|fianc[ée]e?|girlfriend|boyfriend|ex|"
    r"friend|best friend|son|daughter|kid|child|baby|brother|sister|sibling|mom|mum|mother|dad|father|parent|"
    r"grandma|grandmother|grandpa|grandfather|aunt|uncle|cousin|niece|nephew|neighbou?r|landlord|flatmate|roommate"
)
_CUE = re.compile(
    r"(?i:\b(?:my|our|his|her|their|your)(?: (?:new|old|former|current|direct|line|senior|junior|younger|older|"
    rf"little|big|best|late|ex-?))? (?:{_RELATIONS})|"
    r"\b(?:mein(?:e|en|em)?|unser(?:e)?) (?:chef(?:in)?|vorgesetzte[rn]?|kolleg(?:e|in|en)|mann|frau|partner(?:in)?|"
    r"freund(?:in)?|sohn|tochter|bruder|schwester|vater|mutter|mama|papa|nachbar(?:in)?|teamleiter(?:in)?)|"
    r"\b(?:mon|ma|notre) (?:chef(?:fe)?|manager|responsable|coll[èe]gue|mari|femme|compagne|compagnon|ami|amie|"
    r"copain|copine|fils|fille|fr[èe]re|s[œo]eur|p[èe]re|m[èe]re|voisin|voisine)|"
    r"\bmi (?:jefe|jefa|compañer[oa]|espos[oa]|mujer|marido|novi[oa]|amig[oa]|hij[oa]|herman[oa]|padre|madre|"
    r"vecin[oa])|"
    r"\b(?:il mio|la mia|mio|mia) (?:capo|responsabile|collega|marito|moglie|compagn[oa]|fidanzat[oa]|amic[oa]|"
    r"figli[oa]|fratello|sorella|padre|madre|vicin[oa])|"
    r"\b(?:o meu|a minha|meu|minha) (?:chefe|gerente|colega|marido|esposa|mulher|namorad[oa]|amig[oa]|filh[oa]|"
    r"irmão|irmã|pai|mãe|vizinh[oa])|"
    r"\bmijn (?:baas|manager|collega|man|vrouw|vriend(?:in)?|zoon|dochter|broer|zus|vader|moeder)|"
    r"\b(?:named|called|name is|name's|heißt|hei[sß]t|namens|s'appelle|m'appelle|nommée?|se llama|me llamo|"
    r"llamad[oa]|si chiama|mi chiamo|chiamat[oa]|se chama|me chamo|chamad[oa]|heet|genaamd)|"
    r"\b(?:i'm|i am|ich bin|je suis|soy|sono|sou|ik ben|this is|c'est|das ist))[,:]? $"
)
# Cues that also introduce things ("a company called Acme", "I am Happy"): they need a known name after them.
_WEAK_CUE = re.compile(
    r"(?i)\b(?:called|named|nommée?|llamad[oa]|chiamat[oa]|chamad[oa]|genaamd|i'm|i am|ich bin|je suis|soy|sono|sou|"
    r"ik ben|this is|c'est|das ist)[,:]? $"
)
_NOT_NAMES = frozenset(
    "I A An The And Or But If So Then When While Because This That These Those It Its He She We They You Me My Our "
    "Your His Her Their Hi Hello Hey Dear Thanks Thank Yes No Not OK Okay Please Sorry Also Just Today Tomorrow "
    "Yesterday Tonight Monday Tuesday Wednesday Thursday Friday Saturday Sunday God Lord Street Road Avenue Lane "
    "Ich Du Er Sie Es Wir Ihr Der Die Das Ein Eine Und Oder Aber Mein Meine Je Tu Il Elle Nous Vous Ils Le La Les "
    "Un Une Et Ou Mais Mon Ma Yo Él Ella Nosotros El Los Las Una Pero Mi Io Lui Lei Noi Voi Loro Gli Eu Ele Ela Nós "
    "Os As Um Uma Mas Meu Minha Ik Jij Hij Zij Wij Het Een En Maar Mijn AI CEO HR PM Team Company Manager Boss "
    "Coach Doctor Office Project Meeting Review Day Week Month Year Morning Evening Night Mr Mrs Ms Mx Miss Dr Prof "
    "Herr Frau Madame Mme Monsieur Mlle Señor Señora Sr Sra Srta Signor Signora Sig Dott Senhor Senhora Sir".split()
)
_PLACE_PREFIX = frozenset("San Santa Santo São Saint St Sankt Fort Mount Mt Lake Cape Port Porto Puerto New".split())
_PARTICLES = frozenset("van von de da di del della der den du dos das do la le bin ibn al el ten ter zu".split())
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"“(\n•*]|\s-)\s*$")
_NOUN_CONTEXT = frozenset("the a an this that every each next last in on at of by since until from".split())


def _bare(word: str) -> str:
    for suffix in ("'s", "’s", "'", "’"):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            return word[: -len(suffix)]
    return word


def _persons(text: str) -> Iterator[Entity]:
    tiers = _name_tiers()
    words = [(m.start(), m.group()) for m in _WORD.finditer(text)]
    i = 0
    while i < len(words):
        start, word = words[i][0], _bare(words[i][1])
        if not word[0].isupper() or word.isupper() or word in _NOT_NAMES:
            i += 1
            continue
        end, tier, before = start + len(word), tiers.get(word), text[max(0, start - 48) : start]
        cue = _CUE.search(before) is not None and (tier in ("", "~") or not _WEAK_CUE.search(before))
        # Surnames: following capitalised words, with particles ("Ana de la Cruz", "Ludwig van Beethoven").
        last, j, k = end, i, i + 1
        while word == words[i][1] and k < len(words) and k <= i + 4:
            s, w = words[k]
            bare = _bare(w)
            if text[last:s] != " ":
                break
            if w in _PARTICLES:
                last, k = s + len(w), k + 1
                continue
            if not bare[0].isupper() or bare.isupper() or bare in _NOT_NAMES or tiers.get(bare) == "!":
                break
            last, j, k = s + len(bare), k, k + 1
            if bare != w:
                break
        prev = words[i - 1][1] if i else ""
        if prev in _PLACE_PREFIX and text[words[i - 1][0] + len(prev) : start] in (" ", ". "):
            found = False  # "San Francisco", "St Helena"
        elif _HONORIFIC.search(before) or cue or tier == "" or (tier is not None and j > i):
            found = True
        elif tier == "~":
            found = not _SENTENCE_START.search(before) and prev.lower() not in _NOUN_CONTEXT
        else:
            found = False
        if found:
            end = words[j][0] + len(_bare(words[j][1])) if j > i else end
            yield Entity("PERSON", start, end, text[start:end])
        i = (j if found else i) + 1


# --- resolution and redaction ------------------------------------------------------------------------------------


def _spans(finder: Callable[[str], Iterator[tuple[str, int, int]]]) -> Callable[[str], Iterator[Entity]]:
    """A detector that yields bare ``(type, start, end)`` spans (labels, check-digit identifiers) as entities."""

    def detector(text: str) -> Iterator[Entity]:
        for kind, start, end in finder(text):
            yield Entity(kind, start, end, text[start:end])

    return detector


_DETECTORS = (
    _secrets, _url_tokens, _spans(pii_ids.cards), _spans(pii_ids.ibans), _spans(pii_ids.national_ids),
    _spans(find_labelled), _emails, _ips, _dobs, _addresses, _persons,
)  # fmt: skip


def _candidates(text: str) -> list[Entity]:
    found = [e for detector in _DETECTORS for e in detector(text)]
    return found + list(_phones(text, found))  # last: the slowest, and it can skip what others found


def _in_original(normal: View, entities: Sequence[Entity]) -> list[Entity]:
    """Findings in the normalised view, moved to the characters the user wrote (invisibles inside included)."""
    moved = []
    for e in entities:
        start, end = normal.span(e.start, e.end)
        moved.append(Entity(e.type, start, end, normal.original[start:end]))
    return moved


def _resolve(candidates: Sequence[Entity]) -> list[Entity]:
    chosen: list[Entity] = []
    for c in sorted(candidates, key=lambda e: (e.start - e.end, -_SPECIFICITY[e.type], e.start)):
        if c.end > c.start and all(c.end <= o.start or c.start >= o.end for o in chosen):
            chosen.append(c)
    return sorted(chosen, key=lambda e: e.start)


def detect(text: str) -> list[Entity]:
    """All PII in `text`: non-overlapping, sorted by start; on overlap the longest (then most specific) wins.

    The detectors read the shared normal form (textnorm.view: no invisible characters, look-alikes mapped, NFKC), so
    "jane\u200b@example.com" is an e-mail; spans and values are those of ``text`` itself.
    """
    normal = view(text)
    return _resolve(_in_original(normal, _candidates(normal.text)))


_TYPE_ALT = "|".join(sorted(TYPES, key=len, reverse=True))
# What rehydrate accepts: "[PERSON_1]" (any case inside the brackets), bare "PERSON_1" (upper case, not glued to a
# word or to a preceding "]"), a missing bracket on either side, and the markdown-escaped "PERSON\_1".
_PLACEHOLDER = re.compile(
    rf"\[(?P<bt>(?i:{_TYPE_ALT}))(?:_|\\_)(?P<bn>\d+)\]|(?<![\w\]])\[?(?P<t>{_TYPE_ALT})(?:_|\\_)(?P<n>\d+)\]?(?!\w)"
)


def _placeholders_in(text: str) -> list[Entity]:
    return [
        Entity((m.group("bt") or m.group("t")).upper(), m.start(), m.end(), m.group())
        for m in _PLACEHOLDER.finditer(text)
    ]


class Redactor:
    """One per conversation: the same value always gets the same placeholder ([PERSON_1], [EMAIL_1], ...).

    Values seen once are redacted wherever they recur (so "my manager Tom" makes a later "Tom" a [PERSON_1] too), and
    each word of a multi-word name is redacted when it recurs alone. Placeholder-like text already in the input is
    itself redacted, so rehydration can never turn the user's literal "[PERSON_1]" into somebody's name.
    """

    def __init__(self) -> None:
        self._placeholders: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._next: dict[str, int] = {}
        self._counted: dict[str, set[str]] = {}
        self._known: dict[str, str] = {}  # value -> type, for recurrence

    def redact(self, text: str) -> str:
        out: list[str] = []
        pos = 0
        for e in self._entities(text):
            out.append(text[pos : e.start])
            out.append(f"[{self._placeholder(e)}]")
            pos = e.end
        out.append(text[pos:])
        return "".join(out)

    def redact_messages(self, contents: Sequence[str]) -> list[str]:
        # Learn every value first so an early message that only says "Tom" is redacted like the later one that
        # introduced "my manager Tom"; numbering follows first appearance across the conversation.
        for text in contents:
            for e in self._entities(text):
                self._placeholder(e)
        return [self.redact(text) for text in contents]

    def rehydrate(self, text: str) -> str:
        """Placeholders back to values. Accepts "[PERSON_1]", "[person_1]", "PERSON_1", "[PERSON_1", "PERSON_1]" and
        "PERSON\\_1"; placeholders this Redactor never issued ("[PERSON_9]") are left as they are."""

        def swap(m: re.Match[str]) -> str:
            key = f"{(m.group('bt') or m.group('t')).upper()}_{m.group('bn') or m.group('n')}"
            return self._values.get(key, m.group())

        return _PLACEHOLDER.sub(swap, text)

    @property
    def counts(self) -> dict[str, int]:
        return {t: len(values) for t, values in self._counted.items() if values}

    def _entities(self, text: str) -> list[Entity]:
        normal = view(text)
        candidates = _candidates(normal.text)
        for value, kind in self._known.items():
            for m in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", normal.text):
                candidates.append(Entity(kind, m.start(), m.end(), value))
        found = _in_original(normal, candidates + _placeholders_in(normal.text))
        # Placeholder-like text as written too: that is what ``rehydrate`` reads back ("0100000\x1bPHONE_1" holds a
        # bare PHONE_1, though the normal form glues it to the digits).
        found += _placeholders_in(text)
        return _resolve(found)

    def _placeholder(self, e: Entity) -> str:
        key = (e.type, e.value)
        if key not in self._placeholders:
            n = self._next.get(e.type, 0) + 1
            self._next[e.type] = n
            self._placeholders[key] = f"{e.type}_{n}"
            self._values[f"{e.type}_{n}"] = e.value
            # Recurrences are looked for in the normal form, like every finding ("Tom" and "T\u200bom" are one).
            normal = view(e.value).text
            self._known.setdefault(normal, e.type)
            if e.type == "PERSON":
                for part in normal.split():
                    if len(part) > 2 and part[0].isupper() and part not in _NOT_NAMES:
                        self._known.setdefault(part, "PERSON")
            if not _PLACEHOLDER.fullmatch(normal):
                self._counted.setdefault(e.type, set()).add(e.value)
        return self._placeholders[key]
