"""Special-category data (GDPR art. 9) and signs of self-harm, found with multilingual phrase rules.

A request that mentions any category here stays on the local model; one that shows signs of self-harm also gets
`CRISIS_RESOURCES`. Rules cover English, German, French, Spanish, Italian and Portuguese. Text goes through the
shared normaliser first (security/textnorm.py: invisible characters, look-alike letters, NFKC, case, whitespace)
and is stripped of accents (so "depressão", "depressao", "DEPRESSÃO" and "dep\u00adression" are one word), and
every rule is anchored on word boundaries with explicit inflections (`depress\\w*`, `schwanger\\w*`).

Where the line is drawn (the product keeps ordinary wellness coaching routable):
- special: diagnoses, symptoms of a condition, treatment, therapy, medication, disability, pregnancy and fertility,
  sex life, sexual orientation and gender identity (transgender is filed under "sexual_orientation", the closest
  art. 9 heading), religious practice or belief, party politics and votes, union membership, ethnic origin and
  racism, genetic tests, biometric identification;
- not special: wanting to sleep better, drink more water, eat healthier, lose weight, get fitter, stress, nerves
  before a talk ("I'm anxious about tomorrow"), feeling tired or unmotivated, burnout talked about as workload,
  office politics, maternity or parental leave as an HR topic, idioms ("this deadline is killing me", "I could kill
  for a coffee", "career suicide", "thank God").
Clinical framing moves a topic across the line: "anxiety disorder", "my anxiety", "therapy for burnout".
Self-harm rules look for intent about oneself ("I want to kill myself", "no reason to live", "je veux mourir") and
skip injuries and idioms ("I hurt myself at the gym", "killing myself trying to hit this deadline"). Self-harm is
mental-health data too, so it always adds "mental_health". Negation is not parsed: "I don't have diabetes" still
mentions a diagnosis and stays local, which is the fail-closed choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from upcoach.security.textnorm import clean, fold_accents

CATEGORIES = (
    "health",
    "mental_health",
    "medication",
    "pregnancy",
    "sex_life",
    "sexual_orientation",
    "religion",
    "political_opinion",
    "union_membership",
    "ethnic_origin",
    "genetic",
    "biometric",
)

CRISIS_RESOURCES = """\
It sounds like you are carrying something very heavy, and I'm glad you said it. You don't have to face this alone:
please reach out to someone who can be with you right now.
- In immediate danger: call your local emergency number (112 in Europe, 911 in the US and Canada).
- US: call or text 988 (Suicide & Crisis Lifeline).
- UK and Ireland: Samaritans, 116 123 (free, day and night).
- Germany: TelefonSeelsorge, 0800 111 0 111 or 0800 111 0 222 (free, day and night).
- France: 3114 (numéro national de prévention du suicide).
- Spain: 024 (línea de atención a la conducta suicida).
- Anywhere else: findahelpline.com lists free, confidential helplines by country.
If you can, tell someone you trust how you are feeling today. I'm here to keep talking with you too.
"""


@dataclass(frozen=True)
class SpecialCategoryResult:
    categories: tuple[str, ...]
    self_harm: bool
    matches: tuple[str, ...]  # rule names ("health.de", "clinical.en"), never the user's words


# Party and movement names used by the vote rules, normalised (lower case, no accents).
_PARTIES = (
    r"(?:the )?(?:greens?|labour|tor(?:y|ies)|conservatives?|lib ?dems?|liberal democrats|liberals?|democrats?|"
    r"republicans?|reform uk|ukip|snp|trump|biden|harris|obama|afd|cdu|csu|spd|fdp|grunen|(?:die )?linke|bsw|"
    r"le pen|melenchon|macron|rassemblement national|rn|lfi|france insoumise|ecologistes|(?:le )?parti \w+|ps|psoe|"
    r"pp|partido \w+|vox|podemos|sumar|lega|fratelli d'italia|pd|partito \w+|m5s|cinque stelle|forza italia|pt|psd|"
    r"chega|bolsonaro|lula)"
)

# Category -> language -> phrase fragments. Each (category, language) compiles to one rule named "category.lang".
_RULES: dict[str, dict[str, tuple[str, ...]]] = {
    "self_harm": {
        "en": (
            r"(?:kill(?:ing)?|hurt(?:ing)?|harm(?:ing)?|cut(?:ting)?|hang(?:ing)?|starv(?:e|ing)|poison(?:ing)?|"
            r"drown(?:ing)?|shoot(?:ing)?) (?:my ?self|myself)(?! (?:at|during|while|when i (?:fell|slipped|tripped|"
            r"crashed|was)|fell|slipped|playing|running|lifting|training|skiing|falling|shaving|cooking|chopping|"
            r"on|in|last|yesterday|badly|trying|with work|working|over|for|laughing|some|slack|a break|off|short))",
            r"suicid(?:e|es|al|ality)",
            r"self[- ]?(?:harm\w*|injur\w*|mutilat\w*)",
            r"(?:took|take|taking) an overdose|overdos\w* on (?:my )?(?:pills|meds|medication|tablets|sleeping pills)",
            r"(?:end|ending|take|taking) (?:it all|my (?:own )?life(?! back| in(?:to)? my own hands))",
            r"(?:want|wanna|wanted|wish|going|ready|deserve|longing) (?:to )?die(?! (?:of|from|laughing|with))",
            r"wish (?:i|i'd) (?:was|were|had) (?:dead|never been born)|better off (?:dead|without me)",
            r"(?:no|any|don't see the|do not see the) (?:reason|point) (?:to|in) (?:live|living|go on|going on|"
            r"being alive)",
            r"nothing (?:left )?to live for",
            r"(?:don't|do not|dont) want to (?:live|be alive|exist|wake up|go on living)(?! (?:in|at|with|near|"
            r"there|here|abroad|alone|together|on|like))",
            r"can'?t go on living",
        ),
        "de": (
            r"(?:will|mochte|mag|kann|wollte) (?:einfach )?(?:nicht mehr|nimmer) leben",
            r"nicht mehr leben (?:will|mochte|wollen)",
            r"(?:will|mochte|wollte|wurde gern|wurde lieber) (?:einfach )?sterben",
            r"mich (?:selbst )?(?:umbringen|umzubringen|toten|zu toten|verletzen|zu verletzen|ritzen|zu ritzen)",
            r"ich bringe? mich (?:noch )?um",
            r"mir (?:selbst )?das leben (?:zu )?nehmen",
            r"selbstmord\w*|suizid\w*|lebensmude\w*|selbstverletz\w*",
            r"kein(?:en)? (?:sinn|grund) mehr (?:zu leben|im leben|am leben)",
            r"nie mehr aufwachen|nicht mehr aufwachen",
        ),
        "fr": (
            r"(?:veux|voudrais|vais|aimerais|envie de|envie d'en) mourir",
            r"(?:me|se) suicider|suicidaire\w*",
            r"(?:veux|vais|voudrais|pense a|envie de) me tuer",
            r"en finir avec (?:la vie|ma vie|tout)|je veux en finir",
            r"mettre fin a (?:mes jours|ma vie)",
            r"me faire du mal|me scarifier|scarification\w*",
            r"(?:plus|pas) envie de vivre|ne veux plus vivre",
        ),
        "es": (
            r"(?:quiero|quisiera|deseo|ganas de) morir(?:me)?",
            r"suicid(?:arme|io|a|as)",
            r"(?:quiero|voy a|pienso en|pensado en|ganas de) matarme|quiero matarme",
            r"quitarme la vida|acabar con (?:todo|mi vida)",
            r"hacerme dano|autolesion\w*|cortarme las venas",
            r"no quiero (?:seguir )?(?:vivir|viviendo)|(?:no tengo|sin) (?:razones|motivos|ganas) (?:para|de) vivir",
        ),
        "it": (
            r"(?:voglio|vorrei|voglia di) morire",
            r"uccidermi|ammazzarmi|suicidarmi|suicidio",
            r"togliermi la vita|farla finita(?! con (?:questo|questa|il|la|lo))",
            r"farmi del male|autolesion\w*",
            r"non voglio piu vivere|non voglio continuare a vivere",
        ),
        "pt": (
            r"(?:quero|queria|vontade de) morrer",
            r"me matar|matar-me|suicid(?:ar|io|a)\w*",
            r"tirar a (?:minha )?(?:propria )?vida|acabar com tudo",
            r"me machucar|machucar-me|me ferir|me cortar|automutila\w*|autolesa\w*",
            r"nao quero (?:mais )?(?:viver|continuar (?:a viver|vivendo))",
        ),
    },
    # Words that say "this is about a medical matter" without saying which: they count as "health" only when no
    # more precise category (mental health, medication, pregnancy, ...) explains them.
    "clinical": {
        "en": (
            r"diagnos\w*|symptoms?|illness\w*|sick (?:leave|note|day)|medical (?:leave|condition|history|issues?|"
            r"appointment)|(?:in|into|the) hospital|hospitali[sz]\w*|admitted to (?:the )?hospital",
            r"(?:my|the|a|see|saw|seeing|visit) (?:doctor|gp)|(?:i'm|i am|been|feel|feeling|got) (?:really |very |so )?"
            r"(?:sick|ill)(?! of)",
        ),
        "de": (r"diagnos\w*|krank\w*|arzt\w*|arztin\w*|hausarzt\w*|symptom\w*|reha",),
        "fr": (r"diagnosti\w*|malade|arret maladie|medecin\w*|symptome\w*|hopital|hospitalis\w*",),
        "es": (
            r"diagnostic\w*|enferm[oa]s?|baja medica|medico|sintoma\w*|hospitaliz\w*|(?:en el|al) hospital|"
            r"ingresad[oa]",
        ),
        "it": (r"diagnos\w*|malat[oaie]|medico|sintom\w*|in ospedale|ricoverat\w*",),
        "pt": (r"diagnostic\w*|doente|baixa medica|medico|sintoma\w*|(?:no|ao) hospital|hospitaliz\w*|internad[oa]",),
    },
    "health": {
        "en": (
            r"diseases?|chronic (?:pain|illness|fatigue|condition|disease)|surger(?:y|ies)|"
            r"(?:had|have|having|my|an) operation",
            r"injur(?:y|ies|ed)|fractur\w*|broken (?:leg|arm|wrist|ankle|bone|rib|foot|hand)|concussion",
            r"cancer|tumou?rs?|chemo\w*|radiotherapy|diabet\w*|insulin resistance|asthma\w*|epilep\w*|migraines?",
            r"arthritis|hypertension|(?:high|low) blood pressure|blood pressure|cholesterol|heart (?:attack|disease|"
            r"condition|failure|surgery)|(?:a|had a|mini) stroke(?! of)|multiple sclerosis|(?:with|have|has) ms",
            r"parkinson\w*|alzheimer\w*|dementia|hiv|hepatitis|(?:had|have|got|caught|positive for|long) covid|"
            r"pneumonia|infection|(?:the )?flu",
            r"fever|allerg\w*|c(?:o|oe)liac|crohn\w*|ibs|endometriosis|pcos|menopaus\w*|thyroid|insomnia|sleep apno?ea",
            r"fibromyalgia|lupus|disabilit\w*|disabled|wheelchair|(?:i'm|i am|partially|legally|going|colou?r) blind|"
            r"blindness|partially sighted|visually impaired|(?:i'm|i am|partially|profoundly) deaf|deafness|"
            r"hard of hearing|hearing aids?|dyslexi\w*",
            r"physiotherap\w*|physio|physical therapy|(?:back|neck|knee|joint|chest|stomach|shoulder|hip|nerve) pain|"
            r"pain(?:ful)? (?:in my|killers?)|painkillers?",
            r"(?:back|head|knee|knees|neck|shoulder|shoulders|feet|foot|legs?|stomach|tooth|teeth|hip|wrist|joints?) "
            r"(?:is|are|has been|have been) killing me",
            r"(?:have|had|get|getting) (?:a |bad )?headaches?|obes\w*|bmi|erectile dysfunction|stis?|stds?|"
            r"sexually transmitted|gestational \w+",
            r"(?:kidney|liver) (?:disease|failure|stones?)|transplant|dialysis|anaemi\w*|anemi\w*|tinnitus|vertigo|"
            r"eczema|psoriasis",
        ),
        "de": (
            r"krankheit\w*|erkrank\w*|operation|operiert|schmerz\w*|diabet\w*|asthma|epilepsie|migrane\w*|krebs\w*",
            r"tumor\w*|chemo\w*|herzinfarkt|schlaganfall|bluthochdruck|bandscheibe\w*|behinder\w*|rollstuhl\w*",
            r"(?:bin|ist|sind|fast|halb) blind|erblindet|sehbehindert\w*|gehorlos|schwerhorig|allergi\w*|"
            r"physiotherap\w*|chronisch krank\w*|chronische \w+",
            r"multiple sklerose|demenz|alzheimer|parkinson|rheuma\w*|tinnitus",
        ),
        "fr": (
            r"maladie\w*|cancer\w*|diabet\w*|asthme|epilep\w*|migraine\w*|chirurgi\w*|(?:ete|suis|etre) opere\w*",
            r"douleur\w*|handicap\w*|fauteuil roulant|aveugle|sourde?s?|allergi\w*|avc|infarctus|tension arterielle",
            r"chimio\w*",
        ),
        "es": (
            r"enfermedad\w*|cancer|diabet\w*|asma|epilep\w*|migrana\w*|cirugia|me operaron|"
            r"(?:fui|estoy|estuve) operad[oa]",
            r"dolor\w*|discapacidad|silla de ruedas|ciego|sordo|alergi\w*|fibromialgia|infarto|ictus|quimio\w*",
        ),
        "it": (
            r"malatti\w*|cancro|tumore|diabet\w*|asma|epiless\w*|emicrania|intervento chirurgico|"
            r"operat[oa] (?:al|alla|a)",
            r"dolor\w*|disabil\w*|sedia a rotelle|cieco|sordo|allergi\w*|infarto|ictus|chemio\w*",
        ),
        "pt": (
            r"doenca\w*|cancro|cancer|diabet\w*|asma|epileps\w*|enxaqueca\w*|cirurgia|operad[oa]|dores?",
            r"deficien\w*|cadeira de rodas|cego|surdo|alergi\w*|avc|enfarte|infarto|quimio\w*",
        ),
    },
    "mental_health": {
        "en": (
            r"depress(?:ion|ed|ive)\w*|anxiety (?:disorder|attacks?)|(?:generali[sz]ed|social|health) anxiety",
            r"(?:have|with|suffer from|suffering from|diagnosed with|my|for|treat(?:ing|ment for)?) anxiety",
            r"panic attacks?|ptsd|post-?traumatic|bipolar|schizophreni\w*|psychos[ie]s|psychotic|ocd|"
            r"obsessive[- ]compulsive",
            r"eating disorder|anorexi\w*|bulimi\w*|binge eating|adhd|autis\w*|asperger\w*",
            r"(?<!physical )(?<!speech )(?<!occupational )(?<!retail )therap(?:y|ist|ists)|psychotherap\w*|"
            r"(?<!career )(?<!financial )(?<!legal )counsell?(?:ing|or)",
            r"psychiatr\w*|psychologist\w*|mental (?:health|illness|breakdown|disorder)|nervous breakdown",
            r"(?:diagnosed with|treatment for|sick leave for|signed off with|clinical) burn-?out",
        ),
        "de": (
            r"depression\w*|depressiv\w*|angststorung\w*|panikattacke\w*|psychotherap\w*|therapeut\w*|therapie",
            r"psychiater\w*|psychiatrisch\w*|psycholog\w*|essstorung\w*|magersucht|bulimie|ptbs|zwangsstorung\w*",
            r"bipolar\w*|adhs|autis\w*|(?:wegen|mit|diagnose) burn-?out",
        ),
        "fr": (
            r"depression\w*|deprime\w*|anxiete|crises? d'angoisse|attaques? de panique|psychiatr\w*|psycholog\w*",
            r"therapie\w*|therapeute\w*|troubles? (?:bipolaire|anxieux|alimentaire|obsessionnel)\w*|tdah|autis\w*",
            r"anorexi\w*|boulimi\w*|schizophren\w*|arret (?:maladie )?pour burn-?out|"
            r"diagnostic de burn-?out",
        ),
        "es": (
            r"depresion\w*|deprimid[oa]s?|ansiedad (?:generalizada|social)|trastorno\w*|(?:tengo|sufro de?|con|"
            r"para (?:la|mi)?) ?ansiedad|ataques? de panico|psiquiatr\w*|psicolog\w*|terapi\w*|tdah|autis\w*",
            r"anorexi\w*|bulimi\w*|esquizofren\w*|bipolar",
        ),
        "it": (
            r"depress\w*|ansia (?:generalizzata|sociale)|disturb\w* d'ansia|soffro d'ansia|attacchi? di panico",
            r"psichiatr\w*|psicolog\w*|terapi\w*|in terapia|disturbo (?:bipolare|alimentare|ossessivo)\w*|adhd",
            r"autis\w*|anoressi\w*|bulimi\w*|schizofren\w*|bipolar\w*",
        ),
        "pt": (
            r"depress(?:ao|iv)\w*|deprimid[oa]s?|ansiedade (?:generalizada|social)|transtorno (?:de|bipolar|obsessivo|"
            r"alimentar)\w*|crises? de "
            r"ansiedade|(?:para|com|tenho) (?:a )?ansiedade|ataques? de panico|sindrome do panico",
            r"psiquiatr\w*|psicolog\w*|terapi\w*|tdah|autis\w*|anorexi\w*|bulimi\w*|esquizofren\w*|bipolar",
        ),
    },
    "medication": {
        "en": (
            r"medications?|medicines?|meds|prescri(?:bed|ption|ptions)|"
            r"(?:sleeping|birth control|the|my) (?:pills?|tablets)|"
            r"antidepressants?",
            r"antipsychotics?|anxiolytics?|ssris?|snris?|sertraline|fluoxetine|prozac|zoloft|citalopram|escitalopram",
            r"lexapro|paroxetine|venlafaxine|bupropion|wellbutrin|mirtazapine|(?:on|take|taking) lithium|lamotrigine|"
            r"quetiapine",
            r"seroquel|xanax|alprazolam|valium|diazepam|lorazepam|ativan|clonazepam|klonopin|adderall|ritalin",
            r"methylphenidate|vyvanse|concerta|modafinil|insulin|metformin|ozempic|semaglutide|statins?",
            r"beta[- ]?blockers?|propranolol|opioids?|oxycodone|morphine|tramadol|codeine|painkillers?|steroids?",
            r"inhaler|hormone (?:therapy|replacement)|hrt|(?:my|the) (?:dose|dosage)",
        ),
        "de": (
            r"medikament\w*|tablette\w*|antidepressiv\w*|schlaftablette\w*|beruhigungsmittel\w*|psychopharmak\w*",
            r"insulin|schmerzmittel\w*|pille",
        ),
        "fr": (
            r"medicament\w*|antidepresseur\w*|somnifere\w*|anxiolytique\w*|cachets?|comprimes?|ordonnance\w*",
            r"prescri\w*|insuline|antidouleur\w*|pilule",
        ),
        "es": (
            r"medicament\w*|medicacion|antidepresiv\w*|ansiolitic\w*|pastillas?|pildoras?|receta medica|insulina",
            r"analgesic\w*|somnifer\w*|tratamiento (?:con|farmacologico)",
        ),
        "it": (
            r"farmac(?:o|i)|medicin(?:a|e|ali)|antidepressiv\w*|ansiolitic\w*|sonnifer\w*|pastiglie|pillol[ae]",
            r"compresse|insulina|antidolorifici",
        ),
        "pt": (
            r"remedios?|medicament\w*|medicacao|antidepressiv\w*|ansiolitic\w*|comprimidos?|pilulas?|insulina",
            r"analgesic\w*|calmantes",
        ),
    },
    "pregnancy": {
        "en": (
            r"pregnan\w*|expecting (?:a|our|my) (?:first |second |third )?(?:baby|child)|miscarr\w*|ivf|in vitro",
            r"fertility (?:treatment|clinic|issues|problems)|trying to conceive|trimester|morning sickness",
            r"gestational|stillbirth|abortion|antenatal|prenatal|postnatal|postpartum",
        ),
        "de": (
            r"schwanger\w*|fehlgeburt\w*|kinderwunsch\w*|kunstliche befruchtung|abtreibung|schwangerschaftsabbruch",
        ),
        "fr": (r"enceinte|grossesse\w*|fausse couche|fiv|pma|avortement|ivg",),
        "es": (r"embarazad[oa]s?|embarazo\w*|aborto\w*|fecundacion in vitro|tratamiento de fertilidad",),
        "it": (r"incinta|gravidanz\w*|aborto\w*|fecondazione|aspetto un bambino",),
        "pt": (r"gravida\w*|gravidez|aborto\w*|fertilizacao in vitro|(?:a )?espera de um bebe",),
    },
    "sex_life": {
        "en": (
            r"sex life|sexual(?:ly)?(?! orientation| identity)|(?<!same-)sex|libido|erectile|impoten\w*|intercourse|"
            r"orgasm\w*",
            r"porn\w*|bdsm|one-night stand|hookups?|condoms?|stis?|stds?",
        ),
        "de": (r"sexleben|sexuell\w*(?! orientierung)|libido|erektion\w*|geschlechtsverkehr|potenz\w*",),
        "fr": (r"vie sexuelle|(?<!orientation )sexuel\w*|libido|erection\w*|rapports sexuels",),
        "es": (r"vida sexual|(?<!orientacion )sexual\w*|libido|ereccion\w*|relaciones sexuales",),
        "it": (r"vita sessuale|(?<!orientamento )sessual\w*|libido|erezione",),
        "pt": (r"vida sexual|(?<!orientacao )sexual\w*|libido|erecao",),
    },
    "sexual_orientation": {
        "en": (
            r"gay|lesbians?|bisexual\w*|queer|homosexual\w*|heterosexual\w*|asexual\w*|pansexual\w*|lgbt\w*",
            r"(?:came|come|coming) out (?:as|to (?:my|our|the) (?:parents|family|mum|mom|dad|friends|team|colleagues|"
            r"boss|manager))|not out at work|sexual orientation|sexuality|same-sex",
            r"transgender|trans (?:woman|man|person|people)|transition(?:ing)? at work|non-?binary",
        ),
        "de": (
            r"schwul\w*|lesbisch\w*|bisexuell\w*|homosexuell\w*|queer|transgender|transfrau|transmann|"
            r"coming-?out|geoutet|sexuelle orientierung",
        ),
        "fr": (r"homosexuel\w*|lesbienne\w*|gay|gai|bisexuel\w*|queer|transgenre|coming out|orientation sexuelle",),
        "es": (r"homosexual\w*|lesbiana\w*|gay|bisexual\w*|queer|transgenero|salir del armario|orientacion sexual",),
        "it": (r"omosessual\w*|lesbic[ah]e?|gay|bisessual\w*|queer|transgender|coming out|orientamento sessuale",),
        "pt": (r"homossexual\w*|lesbica\w*|gay|bissexual\w*|queer|transgenero|sair do armario|orientacao sexual",),
    },
    "religion": {
        "en": (
            r"religio\w*|pray(?:s|ed|ing)?|prayers?|(?:to|at|attend|in) church|mosque|synagogue|ramadan|eid|"
            r"(?:for|during) lent",
            r"diwali|passover|yom kippur|shabbat|sabbath|kosher|halal|muslims?|islam\w*|catholic\w*|protestant\w*",
            r"evangelical\w*|jewish|jews?|judaism|hindu\w*|buddhis\w*|sikh\w*|atheis\w*|agnostic\w*|mormon\w*",
            r"jehovah\w*|quran|koran|bible|torah|hijab|headscarf|kippah|turban|my faith|believe in god|"
            r"(?:to|attend) mass",
            r"(?:a|as a|i'm|i am|practi[cs]ing|devout|born-again|my) christian\w*|christian (?:faith|values|beliefs)",
        ),
        "de": (
            r"religi\w*|beten|bete|gebet\w*|(?:in die|zur|in der) kirche|moschee|synagoge|muslim\w*|islam\w*",
            r"christlich\w*|christin|ich bin christ|katholisch\w*|evangelisch\w*|judisch\w*|jude|judin|hindu\w*",
            r"buddhist\w*|atheist\w*|kopftuch|ramadan|(?:mein|meinen|religioser) glaube\w*",
        ),
        "fr": (
            r"religi\w*|prier|priere\w*|eglise|mosquee|synagogue|musulman\w*|chretien\w*|catholique\w*",
            r"protestant\w*|juif|juive\w*|hindou\w*|bouddhist\w*|athee\w*|porte le voile|ramadan|messe",
        ),
        "es": (
            r"religi\w*|rezar|rezo|oracion\w*|iglesia|mezquita|sinagoga|musulman\w*|cristian[oa]s?|catolic[oa]s?",
            r"evangelic[oa]s?|judi[oa]s?|hindu\w*|budista\w*|ate[oa]|ramadan|misa|mi fe",
        ),
        "it": (
            r"religi\w*|pregare|preghier\w*|chiesa|moschea|sinagoga|musulman\w*|cristian\w*|cattolic\w*",
            r"ebre[oia]|induist\w*|buddist\w*|ate[oa]|ramadan|(?:a|alla) messa|shabbat",
        ),
        "pt": (
            r"religi\w*|rezar|oracao|orar|igreja|mesquita|sinagoga|muculman\w*|cristao|crista|cristas|catolic\w*",
            r"evangelic\w*|judeu|judia|hindu\w*|budista\w*|ateu|ateia|ramadao|missa|culto",
        ),
    },
    "political_opinion": {
        "en": (
            rf"(?:vote[ds]?|voting) (?:for|against) {_PARTIES}",
            r"(?:member|supporter|activist) of (?:the )?(?:\w+ ){0,3}party",
            r"(?:i'm|i am) (?:a |an )?(?:registered |lifelong |proud )?(?:republican|democrat|conservative|tory|"
            r"socialist|communist|libertarian|marxist|anarchist|leftist)",
            r"political (?:views?|opinions?|beliefs?|affiliation|leanings?|party)|(?:left|right)-?wing|"
            r"far[- ](?:left|right)",
        ),
        "de": (
            rf"{_PARTIES} (?:\w+ ){{0,3}}gewahlt|(?:gewahlt|wahle|stimme fur|stimmte fur) (?:die |den )?{_PARTIES}",
            rf"mitglied (?:der|in der|bei der) (?:partei|{_PARTIES})|politische (?:meinung|einstellung|ansicht)\w*",
        ),
        "fr": (
            rf"vote (?:pour )?(?:les |le |la )?(?:{_PARTIES}|ecologistes)|milit\w* (?:au|a la|pour|dans)",
            r"opinions? politiques?|convictions politiques|je suis (?:de gauche|de droite)",
        ),
        "es": (
            rf"vot(?:e|o|a|amos|ado) (?:a|por|al) (?:la |el |los )?{_PARTIES}",
            rf"afiliad[oa] (?:a|al) (?:partido|{_PARTIES})",
            r"militante (?:de|del)|ideologia politica|opiniones? politicas?",
        ),
        "it": (
            rf"votat[oa] (?:per )?(?:il |la )?{_PARTIES}|iscritt[oa] (?:al|alla) (?:partito|{_PARTIES})",
            r"opinioni politiche|militant[ei] (?:del|della|di)",
        ),
        "pt": (
            rf"vot(?:ei|o|amos) (?:em|no|na|nos|para) (?:o |a )?{_PARTIES}",
            rf"filiad[oa] (?:ao|a) (?:partido|{_PARTIES})|opinioes politicas",
        ),
    },
    "union_membership": {
        "en": (
            r"trade unions?|labou?r unions?|union (?:member\w*|rep\w*|dues|meeting|card|steward)|shop steward",
            r"(?:join(?:ed)?|in|member of) (?:the|a|my|our) union|unioni[sz]ed|on strike|going on strike",
            r"(?:joined|member of|in|rep for|rep at) (?:unite|unison|gmb|teamsters|afl-cio|seiu|uaw|ver\.di|verdi)",
        ),
        "de": (r"gewerkschaft\w*|betriebsrat\w*|ver\.?di|ig metall",),
        "fr": (r"syndica\w*|syndique\w*|cgt|cfdt|force ouvriere",),
        "es": (r"sindica\w*|ccoo|ugt",),
        "it": (r"sindaca\w*|cgil|cisl|uil",),
        "pt": (r"sindica\w*",),
    },
    "ethnic_origin": {
        "en": (
            r"ethnic\w*|racis\w*|racial\w*|(?:my|because of my|of my) race|skin colou?r|(?:people|person|woman|man) "
            r"of colou?r",
            r"(?:i'm|i am|as an?) (?:black|asian|latina|latino|latinx|hispanic|arab|roma|romani|indigenous|aboriginal|"
            r"biracial|mixed[- ]race|native american|first nations)",
            r"(?:immigrant|migrant|migration) background|of \w+ descent",
        ),
        "de": (r"ethnisch\w*|rassis\w*|migrationshintergrund|(?:meine|meiner) herkunft|hautfarbe",),
        "fr": (r"ethni\w*|racis\w*|couleur de peau|mes origines",),
        "es": (r"etni\w*|racis\w*|color de piel|gitan[oa]s?",),
        "it": (r"etni\w*|razzis\w*|colore della pelle",),
        "pt": (r"etni\w*|racis\w*|cor da pele",),
    },
    "genetic": {
        "en": (
            r"genet(?:ic|ics|ically)|dna (?:test\w*|results?|analysis|kit)|23andme|ancestrydna|brca\d?|"
            r"gene (?:mutation|variant|test)|carry a gene",
            r"carrier of (?:a|the) (?:gene|mutation|disease)|hereditary|genom\w*",
        ),
        "de": (r"gentest\w*|genetisch\w*|erbkrank\w*|erblich\w*|dna-?(?:test|analyse)\w*",),
        "fr": (r"genetique\w*|test (?:adn|d'adn)|hereditaire\w*",),
        "es": (r"genetic[oa]s?|(?:prueba|test) de adn|hereditari\w*",),
        "it": (r"genetic[oa]|genetici|genetiche|test del dna|ereditari\w*",),
        "pt": (r"genetic[oa]s?|teste de dna|hereditari\w*",),
    },
    "biometric": {
        "en": (r"biometric\w*|fingerprints?|face scan|facial recognition|face id|iris scan|retina scan|voice ?print",),
        "de": (r"biometr\w*|fingerabdr\w*|gesichtserkennung|iris-?scan",),
        "fr": (r"biometri\w*|empreintes? digitales?|reconnaissance faciale",),
        "es": (r"biometric\w*|huellas? dactilares?|reconocimiento facial",),
        "it": (r"biometric\w*|impront[ae] digital[ei]|riconoscimento facciale",),
        "pt": (r"biometri\w*|impress(?:ao|oes) digita(?:l|is)|reconhecimento facial",),
    },
}

_COMPILED: tuple[tuple[str, str, re.Pattern[str]], ...] = tuple(
    (f"{category}.{lang}", category, re.compile(r"\b(?:" + "|".join(fragments) + r")\b"))
    for category, by_lang in _RULES.items()
    for lang, fragments in by_lang.items()
)
# Idioms removed before matching, so "career suicide" never reads as intent.
_IDIOMS = re.compile(
    r"\b(?:(?:career|social|political|professional|commercial|financial|electoral) suicide|suicide (?:squad|mission|"
    r"run|doors?|sprints?|drills?|squeeze|burpees?|pact with my \w+)|suicid(?:e|io) (?:professionnel|politique|social|"
    r"profesional|politico|professionale|commerciale))\b"
)


_MEDICAL = frozenset(("health", "mental_health", "medication", "pregnancy", "sex_life", "genetic", "self_harm"))


def detect_special_categories(text: str) -> SpecialCategoryResult:
    # The shared normaliser first (invisibles, look-alikes, NFKC, case, whitespace): "H\u200bIV" is "hiv" here.
    normalised = _IDIOMS.sub(" ", fold_accents(clean(text)))
    categories: set[str] = set()
    matches: list[str] = []
    for name, category, pattern in _COMPILED:
        if pattern.search(normalised):
            matches.append(name)
            categories.add(category)
    if "clinical" in categories:
        categories.discard("clinical")
        if not categories & _MEDICAL:
            categories.add("health")
    self_harm = "self_harm" in categories
    if self_harm:
        categories.discard("self_harm")
        categories.add("mental_health")
    return SpecialCategoryResult(
        categories=tuple(c for c in CATEGORIES if c in categories),
        self_harm=self_harm,
        matches=tuple(matches),
    )
