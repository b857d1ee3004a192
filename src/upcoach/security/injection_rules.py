"""Named, multilingual prompt-injection rules, matched on normalised text.

EN, DE, FR, ES, IT and PT are written here; NL, PL, TR, AR, HI and JA are data (security/data/injection_rules.json,
one row per rule and language, validated when the module loads: ``parse_data_rules``), and a language is added there.

Each rule is a regular expression with a weight: STRONG evidence blocks on its own, MEDIUM flags, WEAK only
counts together with other evidence. Rules are written against the coaching context: users legitimately say
"ignore my phone", "my manager's instructions", "forget that meeting" or "act as if I'm confident", so a rule
needs an AI-directed object ("previous instructions", "your system prompt") before it counts as strong.

Rules match the *skeleton*: ``normalize`` (NFKC, invisibles, homoglyphs, leetspeak folded) with "l" merged
into "i", because a leetspeak "1" can stand for either ("a11 prev10us" → "aii previous"); patterns get the same
merge when compiled, so they are written in plain spelling. Role tags, URLs and delimiters survive that folding
("<|1m_574r7|>" becomes "<|im_start|>").

Speed: Python's ``re`` needs ~50 µs to *search* one of these alternation-heavy patterns through a long message,
which times 60 rules would blow the latency budget. So each pattern's possible literal openings ("ignore",
"disregard", "vergiss", …) are worked out once from its parse tree, located with ``str.find`` (C speed), and the
pattern is only *matched* there: the same result as ``search``, since a match has to begin with one of them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from re import _constants as _c  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

import numpy as np

from upcoach.language import LANGUAGES
from upcoach.security.textnorm import codepoints, ngram_hashes, rule_form, string_hashes

STRONG = 0.92
MEDIUM = 0.6
WEAK = 0.3


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    weight: float
    pattern: re.Pattern[str]
    openings: frozenset[str] | None  # literal starts of every match; None: no usable ones, search instead


def skeleton(normalized: str) -> str:
    return normalized.replace("l", "i")


_OPENING_LEN = 4  # long enough for str.find to be selective
_MAX_OPENINGS = 512


def _openings(items: Iterable[tuple[Any, Any]]) -> tuple[set[str], bool] | None:
    """Literal strings that every match of the parsed ``items`` starts with, and whether they are the whole match.

    None when some construct (a character category, a large class) leaves the opening unknown.
    """
    partial = {""}
    for op, av in items:
        if all(len(p) >= _OPENING_LEN for p in partial):
            return partial, False
        got: tuple[set[str], bool] | None
        if op is _c.AT:  # \b, ^: zero-width
            continue
        if op is _c.LITERAL:
            got = ({chr(av)}, True)
        elif op is _c.SUBPATTERN:
            got = _openings(av[-1])
        elif op is _c.BRANCH:
            branches = [_openings(alt) for alt in av[1]]
            got = None
            if all(b is not None for b in branches):
                got = (set().union(*(b[0] for b in branches if b)), all(b[1] for b in branches if b))
        elif op is _c.IN and len(av) <= 8 and all(o is _c.LITERAL for o, _ in av):
            got = ({chr(a) for _, a in av}, True)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            lo, hi, sub = av
            inner = _openings(sub)
            got = None
            if inner is not None:
                strings, exact = inner
                if lo == 0:
                    got = (strings | {""}, exact and hi == 1)
                else:
                    repeated = strings
                    for _ in range(min(lo, _OPENING_LEN) - 1):
                        repeated = {x + y for x in repeated for y in strings}
                    got = (repeated, exact and lo == hi and lo <= _OPENING_LEN)
        else:
            got = None
        if got is None:
            return partial, False
        partial = {p + s for p in partial for s in got[0]}
        if len(partial) > _MAX_OPENINGS:
            return None
        if not got[1]:
            return partial, False
    return partial, True


def _rule(name: str, weight: float, pattern: str) -> Rule:
    pattern = skeleton(pattern)
    compiled = re.compile(pattern)
    try:
        found = _openings(_parser.parse(pattern))
    except Exception:  # a private API: if it ever changes, searching is slower but still correct
        found = None
    openings = None
    if found is not None and all(len(o) >= 2 for o in found[0]):
        openings = frozenset(found[0])
    return Rule(name, weight, compiled, openings)


def _alt(*words: str) -> str:
    return "(?:" + "|".join(words) + ")"


# --- ignore / disregard / forget previous instructions -------------------------------------------------------
_IGN_EN = _alt(
    "ignore", "ignoring", "disregard", "disregarding", "forget", "forgetting", "skip", "bypass", "override",
    "overrule", "drop", "discard", "neglect", "abandon", "set aside", "throw out", "do not follow", "don't follow",
    "stop following", "no longer follow",
)  # fmt: skip
_DET_EN = r"(?:(?:all|any|every|each) )?(?:(?:of )?(?:the|your|these|those|such) )?"
_QUAL_EN = _alt(
    "previous", "prior", "above", "earlier", "preceding", "foregoing", "former", "initial", "original", "system",
    "developer", "hidden", "pre-?programmed",
)  # fmt: skip
_TARGET_EN = _alt(
    "instructions?", "prompts?", "rules", "directions", "directives?", "guidelines", "commands?", "programming",
    "constraints", "restrictions", "guardrails", "context", "training", "orders", "polic(?:y|ies)",
)  # fmt: skip
_HUMAN = _alt(
    "manager", "boss", "team", "teacher", "coach", "doctor", "colleagues?", "parents?", "partner", "clients?",
    "company", "lead", "supervisor", "professor", "trainer", "therapist", "mom", "mum", "dad", "wife", "husband",
)  # fmt: skip
# "ignore the previous instructions from my manager" is a coaching question, not an attack.
_NOT_HUMAN_OWNED = rf"(?! (?:(?:from|by|of|at) )?(?:my|our|his|her|their|the) {_HUMAN})"

_IGN_DE = _alt(
    r"ignorier\w*", "vergiss", "vergessen sie", "vergesst", r"missachte\w*", r"übergeh\w*", r"überspring\w*",
    "beachte nicht", "befolge nicht", "befolgen sie nicht",
)  # fmt: skip
_QUAL_DE = _alt(
    "vorherig", "bisherig", "obig", "vorig", "früher", "ursprünglich", "vorangegangen", "vorausgegangen", "system",
    "versteckt", "geheim", "initial", "erst",
) + r"\w*"  # fmt: skip
_TARGET_DE = _alt(r"anweisung\w*", r"instruktion\w*", r"regel\w*", r"befehl\w*", r"vorgabe\w*", r"richtlinie\w*",
                  "prompts?", r"systemprompt\w*", r"anordnung\w*")  # fmt: skip
_IGN_FR = _alt(
    "ignore[zrs]?", "oublie[zrs]?", "néglige[zr]?", "ne tiens pas compte d(?:es|e|u|')",
    "ne tenez pas compte d(?:es|e|u|')",
    "fais abstraction d(?:es|e|u|')", "faites abstraction d(?:es|e|u|')", "passe outre", "contourne[zr]?",
)  # fmt: skip
_TARGET_FR = _alt("instructions?", "consignes?", "règles?", "directives?", "ordres?", "prompts?", "indications?")
_QUAL_FR = _alt(
    r"précédent\w*", r"antérieur\w*", "ci-dessus", "du système", "système", r"initia\w*", r"originel\w*",
    "d'origine", "cachée?s?", "secrète?s?", "de départ",
)  # fmt: skip
_IGN_ES = _alt(
    "ignora", "ignore", "ignoren", "olvida", "olvide", "olviden", "olvídate de", "olvidate de", "descarta",
    "descarte", "omite", "omita", "pasa por alto", "no sigas", "no sigan", "haz caso omiso de", "haga caso omiso de",
)  # fmt: skip
_TARGET_ES = _alt("instrucciones", "instrucción", "reglas", "indicaciones", "directrices", "órdenes", "ordenes",
                  "prompts?", "normas")  # fmt: skip
_QUAL_ES = _alt("anteriores", "previas", "de arriba", "del sistema", "de sistema", "iniciales", "originales",
                "ocultas", "secretas", "precedentes")  # fmt: skip
_IGN_IT = _alt("ignora", "ignori", "ignorate", "dimentica", "dimentichi", "dimenticate", "trascura",
               "non seguire", "non considerare", "tralascia")  # fmt: skip
_TARGET_IT = _alt("istruzioni", "regole", "indicazioni", "direttive", "ordini", "prompt", "norme")
_QUAL_IT = _alt("precedenti", "di sistema", "del sistema", "iniziali", "originali", "nascoste", "segrete", "sopra",
                "fornite")  # fmt: skip
_IGN_PT = _alt("ignore", "ignora", "ignorem", "esqueça", "esqueca", "esquece", "esqueçam", "desconsidere",
               "desconsidera", "descarte", "não siga", "nao siga", "deixe de lado")  # fmt: skip
_TARGET_PT = _alt("instruções", "instrucoes", "instrução", "regras", "orientações", "orientacoes", "diretrizes",
                  "ordens", "prompts?", "normas")  # fmt: skip
_QUAL_PT = _alt("anteriores", "prévias", "previas", "acima", "do sistema", "de sistema", "iniciais", "originais",
                "ocultas", "secretas")  # fmt: skip
_GAP = r"(?:[\w'-]+ ){0,3}"  # up to three words: "alle deine", "toutes les", "todas las"

_IGNORE_RULES = (
    _rule("ignore_previous", STRONG, rf"\b{_IGN_EN} {_DET_EN}{_QUAL_EN} (?:\w+ )?{_TARGET_EN}\b{_NOT_HUMAN_OWNED}"),
    _rule("ignore_previous", STRONG,
          r"\b(?:forget|ignore|disregard) (?:about )?(?:all |everything |anything )(?:that )?(?:(?:is |was )?above|"
          r"(?:you|you've|you have) (?:were |been )?(?:told|given|taught|instructed)|in your (?:prompt|instructions))"),
    _rule("ignore_previous", MEDIUM,
          rf"\b{_IGN_EN} (?:(?:all|any) (?:of )?)?your (?:\w+ )?(?:instructions|rules|guidelines|programming|"
          r"constraints|restrictions|guardrails|training|directives|polic(?:y|ies))\b"),
    _rule("ignore_previous", WEAK, rf"\b{_IGN_EN} (?:all |everything )?(?:the )?(?:above|previous|prior)\b"),
    _rule("ignore_previous", STRONG, rf"\b{_IGN_DE} (?:(?!nicht\b)[\w'-]+ ){{0,3}}{_QUAL_DE} {_TARGET_DE}"),
    _rule("ignore_previous", STRONG,
          r"\bvergiss (?:einfach )?alles,? (?:was (?:dir|ihnen|du) (?:\w+ )?(?:gesagt|beigebracht|vorgegeben)|"
          r"(?:oben|bisher|zuvor|vorher)|bisherige|vorherige)"),
    _rule("ignore_previous", MEDIUM, rf"\b{_IGN_DE} (?:alle )?(?:deine|ihre) (?:anweisungen|regeln|instruktionen|"
          r"programmierung|richtlinien|vorgaben)"),
    _rule("ignore_previous", STRONG, rf"\b{_IGN_FR} {_GAP}{_TARGET_FR} {_QUAL_FR}"),
    _rule("ignore_previous", STRONG,
          r"\boublie[zs]? tout ce (?:qui précède|qu'on (?:t'a|vous a) dit|que (?:l'on|on) (?:t'a|vous a) dit|qui "
          r"(?:t'a|vous a) été dit|que tu sais)"),
    _rule("ignore_previous", MEDIUM, rf"\b{_IGN_FR} (?:toutes )?(?:tes|vos) (?:instructions|consignes|règles|"
          r"directives)"),
    _rule("ignore_previous", STRONG, rf"\b{_IGN_ES} {_GAP}{_TARGET_ES} {_QUAL_ES}"),
    _rule("ignore_previous", STRONG, r"\bolvida (?:todo lo anterior|todo lo que (?:te (?:han dicho|dijeron)|sabes))"),
    _rule("ignore_previous", MEDIUM, rf"\b{_IGN_ES} (?:todas )?(?:tus|sus) (?:instrucciones|reglas|directrices)"),
    _rule("ignore_previous", STRONG, rf"\b{_IGN_IT} {_GAP}{_TARGET_IT} {_QUAL_IT}"),
    _rule("ignore_previous", STRONG,
          r"\bdimentica (?:tutto (?:quello|ciò|cio) che (?:ti è stato detto|ti hanno detto|sai)|"
          r"tutto ciò che precede)"),
    _rule("ignore_previous", MEDIUM, rf"\b{_IGN_IT} (?:tutte )?le tue (?:istruzioni|regole|direttive)"),
    _rule("ignore_previous", STRONG, rf"\b{_IGN_PT} {_GAP}{_TARGET_PT} {_QUAL_PT}"),
    _rule("ignore_previous", STRONG,
          r"\besque(?:ça|ca|ce) tudo (?:o )?que (?:foi dito|te disseram|você sabe|voce sabe|lhe disseram)"),
    _rule("ignore_previous", MEDIUM, rf"\b{_IGN_PT} (?:todas )?(?:as )?(?:suas|tuas) (?:instruções|instrucoes|"
          r"regras|diretrizes)"),
)  # fmt: skip

# --- reveal the system prompt / hidden instructions ------------------------------------------------------------
_SYSTEM_PROMPT = _alt(
    "system ?prompt", "system-prompt", "system message", r"system instructions?", "systemnachricht",
    r"systemanweisung\w*", "prompt (?:du )?système", "message système", "instructions (?:du )?système",
    "prompt (?:del|de) sistema", "mensaje del sistema", "instrucciones del sistema", "prompt di sistema",
    "messaggio di sistema", "istruzioni di sistema", "prompt do sistema", "mensagem do sistema",
    "instruções do sistema", "pre-?prompt", "initial prompt", "hidden prompt", "secret prompt", "original prompt",
    "developer (?:message|prompt)",
)  # fmt: skip
_REVEAL = _alt(
    "reveal", "show", "print", "repeat", "output", "display", "tell", "give", "write", "list", "share", "dump",
    "leak", "expose", "recite", "spell", "paste", "copy", "return", "echo", "type out", "summari[sz]e", "translate",
    r"what(?:'s| is| are| was| were)", r"zeig\w*", "gib", "nenne?", r"wiederhol\w*", r"verrat\w*", r"schreib\w*",
    r"druck\w*", "ausgeben", "montre[zr]?", "affiche[zr]?", "révèle[zr]?", "revele[zr]?", "répète[zr]?", "repete[zr]?",
    "donne[zr]?", "écri[st]", "dis-moi", "dites-moi", r"quel(?:le)?s? (?:est|sont)", r"muestra\w*", r"revela\w*",
    r"repite\w*", "dime", "dame", r"escrib\w*", r"imprim\w*", "cuál", "cual", r"rivela\w*", r"ripeti\w*", "dimmi",
    r"scrivi\w*", r"stampa\w*", r"mostr\w*", r"revele\w*", r"repita\w*", r"diga\w*", r"escreva\w*", "qual",
)  # fmt: skip
_SECRET = _alt(
    "hidden", "secret", "confidential", "internal", r"verborgen\w*", r"versteckt\w*", r"geheim\w*", r"intern\w*",
    "cachée?s?", "secrète?s?", "ocult[ao]s?", "secret[ao]s?", "nascost[eoi]", "segret[eoi]", "confidenzial[ei]",
)  # fmt: skip
# Not "full" or "complete": "give me the complete instructions for the plank" is a normal request.
_ORIGINAL = _alt(
    "original", "initial", "exact", "verbatim", r"ursprünglich\w*", r"genau\w*", r"initia\w*", r"originel\w*",
    "exacte?s?", "originales", "exact[ao]s?", "originali", "iniziali", "esatte", "iniciais", "originais", "exatas",
)  # fmt: skip
_YOUR = _alt("your", "deine", "ihre", "tes", "vos", "tus", "sus", "le tue", "suas", "tuas", "as suas", "i tuoi")
_INSTRUCTIONS = _alt(
    "instructions?", "prompt", "rules", "guidelines", "directives", "programming", "anweisungen", "instruktionen",
    "vorgaben", "regeln", "consignes", "règles", "instrucciones", "reglas", "istruzioni", "regole", "instruções",
    "instrucoes", "regras",
)  # fmt: skip

# "What's a system prompt?" is a question about the concept; "what's your/the system prompt" asks for ours.
_OWNED = _alt(
    "your", "the", "this", "its", "ur", "yours", "deinen", "deine", "dein", "ihren", "ihre", "den", "die", "ton",
    "votre", "le", "tu", "el", "su", "il tuo", "il", "o seu", "o teu", "o", "seu", "teu",
)  # fmt: skip

_REVEAL_RULES = (
    _rule("reveal_prompt", STRONG, rf"\b{_REVEAL}\b.{{0,60}}\b{_OWNED} (?:[\w-]+ ){{0,2}}{_SYSTEM_PROMPT}"),
    _rule("reveal_prompt", STRONG, rf"\b{_REVEAL}\b.{{0,60}}\b{_SECRET} (?:\w+ )?{_INSTRUCTIONS}\b"),
    _rule("reveal_prompt", STRONG, rf"\b{_REVEAL}\b.{{0,60}}\b{_INSTRUCTIONS} {_SECRET}\b"),
    _rule("reveal_prompt", MEDIUM, rf"\b{_REVEAL}\b.{{0,60}}\b{_YOUR} {_ORIGINAL} (?:\w+ )?{_INSTRUCTIONS}\b"),
    _rule("reveal_prompt", MEDIUM, rf"\b{_REVEAL}\b.{{0,60}}\b{_YOUR} {_INSTRUCTIONS} {_ORIGINAL}\b"),
    _rule("reveal_prompt", STRONG,
          r"\b(?:instructions|prompt|rules|guidelines)\b(?: \w+){0,2} (?:you (?:were|have been|'ve been) given|"
          r"you(?: have|'ve)? received|before this (?:message|point)|(?:above|before) this (?:line|point))"),
    # "The instructions so far are confusing" is a user's sentence; "repeat the instructions so far" is not.
    _rule("reveal_prompt", STRONG,
          rf"\b{_REVEAL}\b.{{0,40}}\b(?:instructions|prompt|rules|guidelines)\b(?: \w+){{0,2}} so far\b"),
    _rule("reveal_prompt", STRONG, rf"\b{_REVEAL}\b.{{0,30}}\byour (?:\w+ )?prompt\b (?:so far|above|verbatim)"),
    _rule("reveal_prompt", MEDIUM, rf"\b{_REVEAL}\b (?:me )?(?:all )?(?:of )?(?:your|the) (?:\w+ )?(?:instructions|"
          r"prompt|rules|guidelines)\b (?:above|word for word|exactly|in full)"),
    # Not "your prompt": in a coaching app that is as likely to be a journaling prompt.
    _rule("reveal_prompt", MEDIUM, rf"\b{_REVEAL}\b (?:me )?(?:all )?(?:of )?your (?:instructions|"
          r"programming|directives|anweisungen|instruktionen|consignes|instrucciones|istruzioni|instruções)\b"),
    _rule("reveal_prompt", WEAK,
          r"\b(?:deine|ihre|tes|vos|tus|sus|le tue|suas|tuas) (?:\w+ )?(?:anweisungen|instruktionen|consignes|"
          r"instrucciones|istruzioni|instruções|instrucoes)\b"),
    _rule("reveal_prompt", STRONG,
          rf"\b{_REVEAL}\b.{{0,60}}\b(?:at|from|in) the (?:very )?(?:beginning|start|top) of (?:this|the|our) "
          r"(?:conversation|chat|prompt|context)"),
    _rule("reveal_prompt", MEDIUM,
          rf"\b{_REVEAL}\b (?:[\w-]+ ){{0,2}}(?:everything|all|the text|the words|anything) (?:[\w-]+ ){{0,2}}"
          r"(?:above|before) this (?:line|message|point)\b|\b(?:starting|beginning|begin|start) (?:it |your "
          r"(?:reply|response|answer) )?with:? ['\"]?you are\b"),
    _rule("reveal_prompt", WEAK, _SYSTEM_PROMPT),
    _rule("reveal_prompt", WEAK,
          rf"\b{_REVEAL}\b(?: \w+){{0,4}} (?:the|your) (?:\w+ )?(?:password|passcode|access code|secret (?:word|code|"
          r"key)|magic word|passphrase)\b"),
)  # fmt: skip

# --- personas: "you are now", act as / pretend, developer mode, DAN, jailbreak ----------------------------------
_UNRESTRICTED = _alt(
    "unrestricted", "unfiltered", "uncensored", "unlimited", "unbound", "evil", "rogue", "jailbroken", "malicious",
    "amoral", "unethical", "rebellious", "dan", "different ai", "different assistant", "another ai",
)  # fmt: skip
_RESTRICTIONS = _alt(
    "rules", "restrictions", "filters?", "limits", "limitations", "guidelines", "guardrails", "boundaries",
    "censorship", r"polic(?:y|ies)", "programming", "constraints", r"ethic\w*", "morals",
)  # fmt: skip
_MODE_KIND = _alt(
    "developer", "dev", "jailbreak", "jailbroken", "unrestricted", "unfiltered", "uncensored", "dan", "evil", "sudo",
    "entwickler-?", "développeur", "developpeur", "desarrollador", "de desarrollador", "sviluppatore",
    "desenvolvedor", "de desenvolvedor",
)  # fmt: skip
_ACTIVATE = _alt(
    "enable", "enabled", "activate", "activated", "enter", "entering", "switch to", "switch into", "turn on",
    "you are in", "you're in", "now in", "go into", "boot into", r"aktivier\w*", r"wechsle\w*", "active[zr]?",
    r"activ[ae]\w*", r"attiv\w*", r"ativ\w*", "passe en", "entra en", "entra in", "entre no", "entre em",
)  # fmt: skip

_MODE = (
    rf"(?:{_MODE_KIND} ?mode|entwicklermodus|mode (?:développeur|developpeur)|modo (?:de )?(?:desarrollador|"
    r"desenvolvedor)|modalità (?:di )?sviluppatore|modalita (?:di )?sviluppatore)\b"
)
_PERSONA_RULES = (
    # Bare "developer mode" is weak ("I'm in developer mode at work"); switching it on is the attack.
    _rule("developer_mode", WEAK, rf"\b{_MODE}"),
    _rule("developer_mode", STRONG,
          rf"\b{_ACTIVATE}\b.{{0,30}}(?:{_MODE}|(?:god|debug|admin|root|maintenance) mode\b)|"
          rf"\b{_MODE} ?(?:is )?(?:now )?(?:enabled|activated|on|unlocked|aktiviert|eingeschaltet|activé|activée|"
          r"activado|attivat[ao]|ativado)\b"),
    _rule("jailbreak", WEAK, r"\bjailbr(?:eak|oken|eaking|eaks)\b"),
    _rule("jailbreak", MEDIUM,
          r"\bjailbr\w* (?:you|yourself|this (?:ai|bot|chat|assistant|model|coach)|the (?:ai|bot|assistant|model|"
          r"coach))\b|\bjailbr\w* (?:prompt|mode)\b|\b(?:this|a|the) jailbr\w* (?:prompt|attempt)\b"),
    _rule("jailbreak", STRONG,
          r"\b(?:you are|you're|act as|known as|become|now|called|named|pretend to be|mode) (?:now )?dan\b|"
          r"\bdan (?:mode|prompt|jailbreak)\b|do anything now\W{0,3}\(?dan\b|"
          r"\bdan\W{0,3}(?:which |that |it )?(?:stands for|means|is short for)\W{0,3}do anything now"),
    _rule("persona_override", MEDIUM,
          r"\byou are now (?:an? |in |no |my new |the new |free|unrestricted|unfiltered|going to (?:be|act|respond|"
          r"play)|\w+gpt\b|dan\b)|\bfrom now on,? you(?:'re| are| will be) (?:an? |no longer|free|unrestricted|not|"
          r"\w+gpt\b|dan\b)|\byou(?:'re| are) (?:not|no longer) (?:an ai|a coach|upcoach|an assistant|a "
          r"language model|a chatbot)\b"),
    # "From now on you will remind me to stretch" is a fair request; alone it proves nothing.
    _rule("persona_override", WEAK,
          r"\bfrom now on,? you (?:will|must|shall|should|only|respond|reply|answer|act|behave|speak|talk)\b"),
    _rule("persona_override", STRONG,
          r"\byou(?:'re| are) no longer (?:bound|restricted|limited|required|constrained|subject)\b|"
          r"\byou are (?:now )?(?:free|freed|released|liberated|unbound) (?:of|from) (?:all |any |your )?(?:\w+ )?"
          rf"{_RESTRICTIONS}"),
    _rule("persona_override", MEDIUM,
          r"\bdu bist (?:jetzt|nun|ab (?:sofort|jetzt)) (?:ein|eine|der|die|mein|meine|kein|keine|nicht mehr|frei)\b|"
          r"\bab (?:sofort|jetzt),? (?:bist du|antwortest du|wirst du|sollst du)\b|"
          r"\b(?:tu es|vous êtes) (?:désormais|maintenant|dorénavant) (?:un|une|le|la|mon|ma|libre)\b|"
          r"\bà partir de maintenant,? (?:tu|vous) (?:es|êtes|vas|allez|dois|devez|réponds|répondez)\b|"
          r"\b(?:ahora|a partir de ahora|desde ahora),? (?:eres|serás|vas a ser|responderás|debes)\b|"
          r"\b(?:ora|adesso|da ora in poi|d'ora in poi),? (?:sei|sarai|devi|risponderai) (?:un|una|lo|la|il|libero)\b|"
          r"\b(?:agora|a partir de agora|de agora em diante),? (?:você é|voce e|tu és|você será|você vai|você deve)\b"),
    _rule("persona_override", STRONG,
          rf"\b(?:act|behave|respond|answer|function|operate|roleplay|role-play|pose|pretend to be|pretend you are|"
          rf"pretend you're) (?:as )?(?:if you (?:were|are) )?(?:an? |my |the )?{_UNRESTRICTED}\b"),
    _rule("persona_override", STRONG,
          rf"\bpretend (?:that )?you (?:have|had|don't have|do not have) (?:no |any )?(?:\w+ )?{_RESTRICTIONS}"),
    _rule("persona_override", MEDIUM,
          r"\bact as (?:an? |my )?(?:linux |unix |bash |windows )?(?:terminal|shell|console|interpreter|sql "
          r"database|python interpreter)\b"),
    _rule("persona_override", WEAK,
          r"\bpretend (?:that )?(?:you(?:'re| are)|to be)\b|\btu so,? als (?:ob|wärst) du\b|\bspiei(?:e)? die rolle\b|"
          r"\bfais(?:ons)? semblant\b|\bjoue(?:z)? le rôle\b|\bfinge (?:que eres|ser)\b|\bhaz como si fueras\b|"
          r"\bfingi di essere\b|\bfai finta di essere\b|\bfinja (?:ser|que (?:é|você é))\b"),
    _rule("no_restrictions", MEDIUM,
          rf"\byou (?:have|now have|will have|has) no (?:more )?(?:\w+ )?{_RESTRICTIONS}\b|\byou (?:don't|do not|no "
          rf"longer) (?:have|need to follow|follow|obey) (?:any )?(?:\w+ )?{_RESTRICTIONS}\b|\b(?:respond|answer|reply|"
          rf"write|speak|talk|output) (?:\w+ ){{0,3}}without (?:any )?(?:\w+ )?{_RESTRICTIONS}\b"),
    _rule("no_restrictions", MEDIUM,
          r"\b(?:antworte|antworten|schreibe?|sprich|rede)\w* (?:\w+ ){0,3}ohne (?:\w+ )?(?:einschränkungen|filter|"
          r"zensur|regeln|grenzen|richtlinien)|\bdu hast keine (?:\w+ )?(?:regeln|einschränkungen|grenzen|filter)\b|"
          r"\b(?:réponds|répondez|écris|parle)\w* (?:\w+ ){0,3}sans (?:\w+ )?(?:restrictions|filtres?|censure|règles|"
          r"limites)|\btu n'as (?:plus )?(?:aucune|pas de) (?:règle|restriction|limite)|"
          r"\b(?:responde|contesta|escribe|habla)\w* (?:\w+ ){0,3}sin (?:\w+ )?(?:restricciones|filtros?|censura|"
          r"reglas|límites|limites)|\bno tienes (?:ninguna )?(?:regia|restricción|restriccion|iímite)|"
          r"\b(?:rispondi|scrivi|parla)\w* (?:\w+ ){0,3}senza (?:\w+ )?(?:restrizioni|filtri|censura|regole|limiti)|"
          r"\bnon hai (?:più )?(?:regole|restrizioni|limiti)\b|"
          r"\b(?:responda|responde|escreva|fale)\w* (?:\w+ ){0,3}sem (?:\w+ )?(?:restrições|restricoes|filtros?|"
          r"censura|regras|limites)|\bvocê não tem (?:mais )?(?:regras|restrições|limites)\b"),
)  # fmt: skip

# --- new instructions / override --------------------------------------------------------------------------------
_NEW_RULES = (
    _rule("new_instructions", MEDIUM,
          r"\b(?:new|updated|revised|real|actual|true|additional|secret|override) (?:system )?(?:instructions|prompt|"
          r"directives?|system prompt)\s?:"),
    _rule("new_instructions", MEDIUM,
          r"\byour (?:new|real|actual|true|updated|revised) (?:instructions|rules|task|role|purpose|directive|prompt|"
          r"objective)s? (?:is|are|will be|:)"),
    _rule("new_instructions", STRONG,
          r"\b(?:system|admin|administrator|developer|root|sudo|security|emergency|priority) override\b|\boverrid\w* "
          r"(?:all |any )?your (?:\w+ )?(?:instructions|rules|programming|safety|guidelines|restrictions|settings|"
          r"prompt|protocols?|directives?)"),
    _rule("new_instructions", MEDIUM,
          r"\boverrid\w* (?:all |any |the )?(?:previous |prior |system |safety )?(?:instructions|programming|"
          r"guidelines|restrictions|prompt|protocols?|directives?)"),
    _rule("new_instructions", WEAK,
          r"\bthe situation has changed\b|\binstead of (?:saying|repiying|responding|outputting|writing)\b"),
    _rule("new_instructions", MEDIUM,
          r"\b(?:neue|neuen|aktualisierte|echte|wahre) (?:system)?(?:anweisungen|instruktionen|regeln|aufgabe|rolle|"
          r"befehle)\s?:|\bdeine (?:neuen?|echte|wahre|eigentliche) (?:anweisungen|aufgabe|rolle|instruktionen|"
          r"regeln) (?:sind|ist|lautet|lauten)\b|"
          r"\bnouvelles? (?:instructions|consignes|règles|directives)\s?:|\btes (?:nouvelles|vraies) (?:instructions|"
          r"consignes|règles)\b|\bta nouvelle (?:tâche|mission|consigne) (?:est|:)|"
          r"\bnuevas (?:instrucciones|reglas|órdenes|directrices)\s?:|\btus (?:nuevas|verdaderas|reales) "
          r"(?:instrucciones|reglas|órdenes)\b|\btu nueva (?:tarea|misión|función) (?:es|:)|"
          r"\bnuove (?:istruzioni|regole|direttive)\s?:|\ble tue (?:nuove|vere) (?:istruzioni|regole)\b|"
          r"\bil tuo nuovo (?:compito|ruolo) (?:è|:)|"
          r"\bnovas (?:instruções|instrucoes|regras|diretrizes|ordens)\s?:|\bsuas (?:novas|verdadeiras) "
          r"(?:instruções|instrucoes|regras)\b|\bsua nova (?:tarefa|função|missão) (?:é|:)"),
    _rule("new_instructions", MEDIUM,
          r"\b(?:system|admin)-?(?:override|überschreibung)\b|\büberschreib\w* (?:alle |die |deine )?(?:anweisungen|"
          r"regeln|programmierung)|\boutrepass\w* (?:tes |vos |les )?(?:instructions|consignes|règles)|"
          r"\banula (?:tus |las )?(?:instrucciones|reglas)|\bsovrascrivi (?:le )?(?:tue )?(?:istruzioni|regole)|"
          r"\bsubstitua (?:as |suas )?(?:instruções|regras)"),
)  # fmt: skip

# --- "access granted" hijacks (the Tensor Trust game) -----------------------------------------------------------
_ACCESS_RULES = (
    # Bare "access granted" is only weak: "my access was granted" is a normal sentence; the game's attacks
    # ask the model to *say* it, which the next pattern catches.
    _rule("access_granted", WEAK,
          r"\baccess grant\w*|\b(?:zugriff|zugang) (?:gewährt|erteilt)|\baccès (?:autorisé|accordé)|\bacceso "
          r"(?:concedido|permitido)|\baccesso (?:consentito|garantito)|\bacesso (?:concedido|permitido)"),
    _rule("access_granted", STRONG,
          r"\b(?:say|says|saying|respond|reply|output|print|write|answer|begin|start|type|return|repeat|utter|state|"
          r"only|just|exactly|words?|phrase|sag|antworte|dis|réponds|dì|responde|diga|rispondi)\b[^.]{0,60}\b"
          r"(?:access granted|granted access|access grant)"),
    _rule("access_granted", STRONG,
          r"\b(?:user|i|they) (?:has |have )?(?:input|entered|provided|typed|gave|given|said|supplied) (?:the |a )?"
          r"(?:correct|right|valid) (?:password|passcode|access code)"),
)  # fmt: skip

# --- chat-template role tags (matched on the clean form: "|" and digits survive) ---------------------------------
_ROLE_RULES = (
    _rule("role_tag", STRONG,
          r"<\|(?:im_start|im_end|im_sep|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|"
          r"begin_of_text|end_of_text|fim_\w+|eom_id|python_tag)\|>|\[/?inst\]|<</?sys>>|</?(?:system|assistant)>|"
          r"#{2,} ?(?:system|instruction|instructions|assistant|response|new instructions|developer)\b ?:?|"
          r"\[(?:system|developer|admin)(?: message| prompt| note| instruction)?\]"),
    _rule("role_tag", MEDIUM, r"\b(?:system|developer) (?:message|note|instruction)s? ?:"),
)  # fmt: skip

# --- data exfiltration through markdown images and links --------------------------------------------------------
_EXFIL_KW = ("](", "http")
_EXFIL_RULES = (
    _rule("markdown_exfil", STRONG, r"!\[[^\]]{0,100}\]\( ?https?://[^)\s]{0,300}[?&][^)\s]{0,300}\)"),
    _rule("markdown_exfil", STRONG,
          r"\]\( ?https?://[^)\s]{0,300}(?:\{[^}]{0,40}\}|%s|<[a-z_]+>|\[[a-z_ ]+\]|(?:conversation|history|"
          r"secret|password|prompt|token|data|chat|memory|email|summary|q|msg|message)=)"),
    _rule("markdown_exfil", WEAK, r"!\[[^\]]{0,100}\]\( ?https?://"),
    _rule("markdown_exfil", MEDIUM,
          r"\b(?:append|include|add|render|embed|insert|output|display|show)\w* (?:[\w-]+ ){0,4}(?:image|link|url|"
          r"markdown|pixel)\b.{0,80}https?://|\bsend (?:\w+ ){0,4}(?:conversation|chat|history|messages|data|"
          r"summary|prompt|secrets?|password) to https?://"),
)  # fmt: skip

# --- fake delimiters that pretend the user's turn or the system prompt ended --------------------------------------
_DELIM_RULES = (
    _rule("delimiter_spoof", MEDIUM,
          r"%%%|={3,} ?end\b|\bend of (?:the )?(?:user |untrusted )?(?:input|prompt|instructions|system prompt)\b|"
          r"\b(?:begin|start) (?:of )?(?:the )?(?:untrusted|trusted|system|admin|developer) (?:input|instructions|"
          r"prompt|message|mode)\b|\bend (?:user )?ambiguity\b|-{3,} ?(?:system|admin|developer)\b"),
)  # fmt: skip

_CODE_RULES: tuple[Rule, ...] = (
    _IGNORE_RULES
    + _REVEAL_RULES
    + _PERSONA_RULES
    + _NEW_RULES
    + _ACCESS_RULES
    + _ROLE_RULES
    + _EXFIL_RULES
    + _DELIM_RULES
)
_WEIGHTS = {"strong": STRONG, "medium": MEDIUM, "weak": WEAK}


def parse_data_rules(data: dict[str, Any]) -> tuple[Rule, ...]:
    """The rules of injection_rules.json; ``ValueError`` naming the row if any is malformed."""
    known = {rule.name for rule in _CODE_RULES}
    by_lang = data.get("rules")
    if not isinstance(by_lang, dict) or not set(by_lang) <= set(LANGUAGES):
        raise ValueError(f"injection_rules.json: rules must map languages among {LANGUAGES} to lists of rules")
    rules = []
    for lang, rows in by_lang.items():
        if not isinstance(rows, list) or not rows:
            raise ValueError(f"injection_rules.json: rules.{lang} must be a non-empty list")
        for i, row in enumerate(rows):
            where = f"injection_rules.json: rules.{lang}[{i}]"
            if not isinstance(row, dict) or set(row) != {"name", "weight", "pattern"}:
                raise ValueError(f"{where} must have exactly name, weight and pattern")
            if row["name"] not in known:
                raise ValueError(f"{where}: unknown rule name {row['name']!r} (one of {sorted(known)})")
            if row["weight"] not in _WEIGHTS:
                raise ValueError(f"{where}: weight must be one of {sorted(_WEIGHTS)}")
            pattern = row["pattern"]
            if not isinstance(pattern, str) or not pattern.strip():
                raise ValueError(f"{where}: pattern must be a non-empty string")
            try:
                rules.append(_rule(row["name"], _WEIGHTS[row["weight"]], rule_form(pattern)))
            except re.error as exc:
                raise ValueError(f"{where}: pattern does not compile: {exc}") from exc
    return tuple(rules)


def _load_data_rules() -> tuple[Rule, ...]:
    text = resources.files("upcoach.security").joinpath("data/injection_rules.json").read_text("utf-8")
    return parse_data_rules(json.loads(text))


RULES: tuple[Rule, ...] = _CODE_RULES + _load_data_rules()
RULE_NAMES: frozenset[str] = frozenset(rule.name for rule in RULES) | {"token_flood"}
_ALL_OPENINGS: tuple[str, ...] = tuple(sorted({o for rule in RULES if rule.openings for o in rule.openings}))
# Which openings occur at all is decided from hashes of the message's 2-4-grams: one numpy pass instead of 380
# substring searches (~1 µs each on a long message). A hash only preselects; str.find confirms.
_OPENING_KEYS = string_hashes([o[:_OPENING_LEN] for o in _ALL_OPENINGS])
_KEY_SIZES = range(2, _OPENING_LEN + 1)

# Padding attacks repeat one short token hundreds of times ("ö ö ö …", ") ] } ) ] }") to push the system prompt
# out of the model's attention; real messages of this length are never this repetitive.
_FLOOD_MIN_TOKENS = 40
_SHORT_TEXT = 200  # below this, plain substring tests beat numpy's fixed overhead
_FLOOD_MAX_UNIQUE_RATIO = 0.2


def match_rules(normalized: str) -> dict[str, float]:
    """Rule name → strongest weight that fired, for a message in ``normalize`` form."""
    skel = skeleton(normalized)
    present = _present_openings(skel)
    hits: dict[str, float] = {}
    where: dict[str, list[int]] = {}
    for rule in RULES:
        if hits.get(rule.name, 0.0) >= rule.weight:
            continue
        if rule.openings is None:
            found = rule.pattern.search(skel) is not None
        else:
            live = rule.openings & present
            found = bool(live) and _matches_at(rule.pattern, live, skel, where)
        if found:
            hits[rule.name] = rule.weight
    tokens = skel.split()
    if len(tokens) >= _FLOOD_MIN_TOKENS and len(set(tokens)) <= len(tokens) * _FLOOD_MAX_UNIQUE_RATIO:
        hits["token_flood"] = MEDIUM
    return hits


def _present_openings(skel: str) -> set[str]:
    if len(skel) < _SHORT_TEXT:
        return {opening for opening in _ALL_OPENINGS if opening in skel}
    grams = np.sort(ngram_hashes(codepoints(skel), _KEY_SIZES))
    pos = np.minimum(np.searchsorted(grams, _OPENING_KEYS), len(grams) - 1)
    return {_ALL_OPENINGS[i] for i in np.flatnonzero(grams[pos] == _OPENING_KEYS)}


def _matches_at(pattern: re.Pattern[str], openings: Iterable[str], skel: str, where: dict[str, list[int]]) -> bool:
    """Whether ``pattern`` matches at some occurrence of one of ``openings`` (positions cached in ``where``)."""
    for opening in openings:
        positions = where.get(opening)
        if positions is None:
            positions = []
            at = skel.find(opening)
            while at != -1:
                positions.append(at)
                at = skel.find(opening, at + 1)
            where[opening] = positions
        for at in positions:
            if pattern.match(skel, at):
                return True
    return False
