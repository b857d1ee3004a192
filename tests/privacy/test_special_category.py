"""Special-category (GDPR art. 9) and self-harm rules: per category and language, idioms, the evaluation sets.

`python -m tests.privacy.special_category_eval` prints the figures quoted in docs/security.md.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from tests.privacy.special_category_eval import is_data, load_coaching, load_eval, per_label
from upcoach.language import LANGUAGES
from upcoach.privacy.special_category import CATEGORIES, detect_special_categories, parse_rules

CATEGORY_CASES = [
    ("health", "I was diagnosed with type 2 diabetes."),
    ("health", "Ich habe Asthma und kann nicht joggen."),
    ("health", "J'ai une maladie chronique."),
    ("health", "Tengo fibromialgia."),
    ("health", "Ho l'emicrania ogni settimana."),
    ("health", "Tive um AVC."),
    ("health", "My back is killing me."),
    ("health", "I use a wheelchair at work."),
    ("mental_health", "I've been diagnosed with depression."),
    ("mental_health", "Ich habe eine Panikattacke gehabt."),
    ("mental_health", "Je vois un psychiatre."),
    ("mental_health", "Voy al psicólogo cada semana."),
    ("mental_health", "Sono in terapia."),
    ("mental_health", "Estou com depressão."),
    ("mental_health", "My anxiety gets worse before meetings."),
    ("medication", "I take sertraline every morning."),
    ("medication", "Ich nehme Antidepressiva."),
    ("medication", "Je prends des somnifères."),
    ("medication", "Tomo ansiolíticos."),
    ("medication", "Prendo farmaci per dormire."),
    ("medication", "Tomo remédios todos os dias."),
    ("pregnancy", "I'm pregnant and nervous about telling my boss."),
    ("pregnancy", "Ich bin schwanger."),
    ("pregnancy", "Je suis enceinte."),
    ("pregnancy", "Estoy embarazada."),
    ("pregnancy", "Sono incinta."),
    ("pregnancy", "Estou grávida."),
    ("sex_life", "Our sex life is gone since the baby."),
    ("sex_life", "Unser Sexleben leidet."),
    ("sex_life", "Notre vie sexuelle est compliquée."),
    ("sex_life", "Mi vida sexual es un desastre."),
    ("sex_life", "La nostra vita sessuale è un problema."),
    ("sex_life", "Nossa vida sexual acabou."),
    ("sexual_orientation", "I'm gay and not out at work."),
    ("sexual_orientation", "Ich bin lesbisch."),
    ("sexual_orientation", "Je suis homosexuel."),
    ("sexual_orientation", "Soy bisexual."),
    ("sexual_orientation", "Sono omosessuale."),
    ("sexual_orientation", "Sou lésbica."),
    ("religion", "I pray five times a day."),
    ("religion", "Ich bin Muslimin."),
    ("religion", "Je suis catholique."),
    ("religion", "Voy a misa los domingos."),
    ("religion", "Vado in chiesa la domenica."),
    ("religion", "Sou evangélico."),
    ("political_opinion", "I voted for the Greens."),
    ("political_opinion", "Ich habe die SPD gewählt."),
    ("political_opinion", "J'ai voté pour les écologistes."),
    ("political_opinion", "Voté a Podemos."),
    ("political_opinion", "Ho votato per il Partito Democratico."),
    ("political_opinion", "Votei no PT."),
    ("union_membership", "I'm a trade union member."),
    ("union_membership", "Ich bin in der Gewerkschaft."),
    ("union_membership", "Je suis syndiqué."),
    ("union_membership", "Estoy afiliada al sindicato."),
    ("union_membership", "Sono iscritto al sindacato."),
    ("union_membership", "Sou sindicalizado."),
    ("ethnic_origin", "I face racism at work."),
    ("ethnic_origin", "Ich habe einen Migrationshintergrund."),
    ("ethnic_origin", "Je subis du racisme."),
    ("ethnic_origin", "Sufro racismo."),
    ("ethnic_origin", "Subisco razzismo."),
    ("ethnic_origin", "Sofro racismo no trabalho."),
    ("genetic", "My genetic test came back positive."),
    ("genetic", "Mein Gentest war positiv."),
    ("genetic", "Mon test génétique est positif."),
    ("genetic", "Mi prueba genética salió positiva."),
    ("genetic", "Il test genetico è positivo."),
    ("genetic", "O teste genético deu positivo."),
    ("biometric", "The office uses fingerprint scanners."),
    ("biometric", "Wir nutzen Gesichtserkennung."),
    ("biometric", "On utilise la reconnaissance faciale."),
    ("biometric", "Usan reconocimiento facial."),
    ("biometric", "Usiamo il riconoscimento facciale."),
    ("biometric", "Usamos reconhecimento facial."),
]


@pytest.mark.parametrize(("category", "text"), CATEGORY_CASES)
def test_category_fires(category: str, text: str) -> None:
    result = detect_special_categories(text)
    assert category in result.categories, result


SELF_HARM = [
    "I want to kill myself",
    "Sometimes I want to end it all.",
    "I see no reason to live.",
    "I keep wanting to hurt myself.",
    "Everyone would be better off without me.",
    "I don't want to wake up tomorrow.",
    "I've been thinking about suicide.",
    "Ich will nicht mehr leben.",
    "Ich denke daran, mich umzubringen.",
    "Je veux mourir.",
    "J'ai envie de me suicider.",
    "Quiero morir.",
    "No quiero seguir viviendo.",
    "Voglio morire.",
    "Penso di farla finita.",
    "Quero morrer.",
    "Estou a pensar em me matar.",
]


@pytest.mark.parametrize("text", SELF_HARM)
def test_self_harm_fires_and_is_mental_health(text: str) -> None:
    result = detect_special_categories(text)
    assert result.self_harm and "mental_health" in result.categories, result


NOT_SELF_HARM = [
    "This deadline is killing me.",
    "I could kill for a coffee.",
    "How do I kill the process that hangs?",
    "My back is killing me.",
    "I'm killing myself trying to hit this deadline.",
    "I hurt myself at the gym yesterday.",
    "I cut myself some slack this week.",
    "That pitch was career suicide.",
    "I'm dying to try the new app.",
    "I want to take my life back from work.",
    "I don't want to live in London anymore.",
    "Diese Deadline bringt mich um.",
    "Ce projet me tue.",
    "Este trabajo me está matando.",
    "Questo traffico mi uccide.",
    "Este prazo está me matando.",
    "Voglio farla finita con questo progetto.",
]


@pytest.mark.parametrize("text", NOT_SELF_HARM)
def test_idioms_are_not_self_harm(text: str) -> None:
    assert not detect_special_categories(text).self_harm


WELLNESS = [
    "I want to sleep better.",
    "I want to drink more water.",
    "How do I get fitter?",
    "I want to lose a few kilos before summer.",
    "I'm anxious about my presentation tomorrow.",
    "I'm stressed about my review.",
    "I feel tired and unmotivated.",
    "Office politics drain me.",
    "Thank God it's Friday.",
    "We voted on the new logo.",
    "The union of our two teams went badly.",
    "I feel burned out by this workload.",
    "I'm going on maternity leave in June.",
    "Our company's DNA is customer focus.",
    "I have a blind spot when it comes to feedback.",
    "I'm a chronic procrastinator.",
    "Ich will besser schlafen.",
    "Je veux boire plus d'eau.",
    "Quiero ponerme en forma.",
    "Voglio dormire meglio.",
    "Quero dormir melhor.",
]


def test_result_reports_rule_names_not_words() -> None:
    result = detect_special_categories("I take sertraline for my depression and I want to kill myself")
    assert result.categories == ("mental_health", "medication")
    assert {"self_harm.en", "mental_health.en", "medication.en"} <= set(result.matches)
    assert all(m.split(".")[0] in (*CATEGORIES, "self_harm", "clinical") for m in result.matches)
    assert not any("sertraline" in m or "depression" in m for m in result.matches)


def test_accents_and_case_do_not_matter() -> None:
    assert detect_special_categories("ESTOU COM DEPRESSAO").categories == ("mental_health",)
    assert detect_special_categories("Estou com depressão").categories == ("mental_health",)


def test_a_diagnosis_word_alone_counts_as_health_but_defers_to_precise_categories() -> None:
    assert detect_special_categories("My doctor wants more tests.").categories == ("health",)
    assert detect_special_categories("My doctor prescribed antidepressants.").categories == ("medication",)


# --- status, not topic; data, not instructions (issue 20) -------------------------------------------------------

# What an integrator writes in a system prompt: rules about topics, not data about anyone.
INSTRUCTIONS = [
    "You are a coach, not a therapist. Do not diagnose.",
    "If the user mentions depression or suicide, refer them to a professional.",
    "Never give medical advice or recommend medication.",
    "When a client talks about self-harm, stay calm and share crisis lines.",
    "You are not a doctor; if someone describes symptoms, suggest they see one.",
    "- Do not diagnose.\n- If the user mentions an eating disorder, recommend a specialist.",
    "Du bist ein Coach, kein Therapeut. Wenn jemand Suizidgedanken erwähnt, nenne die Nummer der TelefonSeelsorge.",
    "Tu n'es pas un thérapeute. Si l'utilisateur parle de suicide, oriente-le vers le 3114.",
    "No eres psicólogo. Si el usuario menciona autolesiones, ofrécele el 024.",
    "Non sei un medico. Se l'utente parla di depressione, consiglia uno psicologo.",
    "Você não é terapeuta. Se o usuário mencionar suicídio, encaminhe-o a um profissional.",
]


@pytest.mark.parametrize("role", ["system", "developer"])
@pytest.mark.parametrize("text", INSTRUCTIONS)
def test_instructions_in_system_prompts_are_not_data(role: str, text: str) -> None:
    result = detect_special_categories(text, role)
    assert result.categories == () and not result.self_harm, result
    assert result.topics, "the mentions are still reported, as topics"


# Questions and requests about a subject, in the user's own turn: the complexity decides where they go.
TOPIC_QUESTIONS = [
    "What is CBT and how do therapy techniques like reframing work?",
    "What are the typical symptoms of burnout?",
    "Explain how antidepressants affect sleep.",
    "How can managers support employees with a chronic illness?",
    "Write a short blog post about mental health at work.",
    "How do trade unions negotiate pay rises?",
    "Was ist kognitive Verhaltenstherapie?",
    "Qu'est-ce que le trouble bipolaire ?",
    "¿Qué es el TDAH?",
    "Che cos'è la terapia cognitiva?",
    "O que é terapia cognitivo-comportamental?",
]


@pytest.mark.parametrize("text", WELLNESS + TOPIC_QUESTIONS)
def test_wellness_talk_and_topic_questions_stay_routable(text: str) -> None:
    result = detect_special_categories(text)
    assert result.categories == () and not result.self_harm, result


# A person's status, in every role it can arrive in: always data, whatever instruction or question surrounds it.
STATUS = [
    (
        "system",
        "Context about this client: diagnosed with bipolar disorder, takes lithium.",
        {"mental_health", "medication"},
    ),
    ("system", "You are a coach. Do not mention the client's depression unless she raises it.", {"mental_health"}),
    ("system", "You are coaching Maria. Maria has type 1 diabetes; never suggest fasting.", {"health"}),
    ("developer", "User profile: type 1 diabetes, uses an insulin pump.", {"health", "medication"}),
    ("user", "My therapist says I should set boundaries.", {"mental_health"}),
    ("user", "I was diagnosed with ADHD. What is ADHD, exactly?", {"mental_health"}),
    ("user", "What is CBT, and could it help with my panic attacks?", {"mental_health"}),
    ("user", "How do I explain my diabetes to my new team?", {"health"}),
    ("user", "My son has ADHD and homework time is chaos.", {"mental_health"}),
    ("user", "Is it normal to feel this depressed after a promotion?", {"mental_health"}),
    ("assistant", "You told me you take sertraline, so let's plan around the drowsiness.", {"medication"}),
    ("assistant", "Since your depression diagnosis you have been sleeping badly.", {"mental_health"}),
    (
        "tool",
        '{"diagnosis": "generalised anxiety disorder", "medication": "escitalopram"}',
        {"mental_health", "medication"},
    ),
    ("system", "Kontext: Die Klientin hat Multiple Sklerose und nimmt Sertralin.", {"health", "medication"}),
    ("assistant", "Tu m'as dit que tu prends des antidépresseurs.", {"medication"}),
    ("system", "Contexto del cliente: tiene diabetes tipo 2 y toma metformina.", {"health", "medication"}),
    ("user", "Come posso gestire la mia depressione al lavoro?", {"mental_health"}),
    ("assistant", "Você disse que sua depressão piorou no inverno.", {"mental_health"}),
]


@pytest.mark.parametrize(("role", "text", "expected"), STATUS)
def test_a_persons_status_is_data_in_every_role(role: str, text: str, expected: set[str]) -> None:
    result = detect_special_categories(text, role)
    assert expected <= set(result.categories), result


# Self-harm on the user's side counts however it is phrased: as a question, a condition, inside an instruction.
USER_SELF_HARM = [
    "What are the warning signs of suicide?",
    "If I told you I want to kill myself, would you tell anyone?",
    "Don't tell anyone, but I want to kill myself.",
    "Never mind, I just want to die.",
    "How do I stop wanting to die?",
    "Was ist Suizid? Ich denke jeden Tag daran.",
    "Si je parle de suicide, tu appelles quelqu'un ? Je veux mourir.",
    "¿Qué es el suicidio? Quiero morir.",
    "Cos'è il suicidio? Voglio morire.",
    "O que é suicídio? Quero morrer.",
]


@pytest.mark.parametrize("role", ["user", "assistant", "tool", "unknown-role"])
@pytest.mark.parametrize("text", USER_SELF_HARM)
def test_self_harm_is_never_set_aside_outside_system_instructions(role: str, text: str) -> None:
    result = detect_special_categories(text, role)
    assert result.self_harm and "mental_health" in result.categories, result


def test_self_harm_in_a_system_prompt_counts_unless_it_is_a_rule() -> None:
    assert detect_special_categories("Context: this client attempted suicide last year.", "system").self_harm
    assert not detect_special_categories("If anyone mentions suicide, share the crisis lines.", "system").self_harm
    # An explanation in the integrator's text is not a rule: only instructions and conditionals set it aside.
    assert detect_special_categories("What is suicide prevention?", "system").self_harm


def test_one_sentence_is_judged_at_a_time() -> None:
    prompt = "You are a coach, not a therapist. The client has bipolar disorder. Never diagnose."
    assert detect_special_categories(prompt, "system").categories == ("mental_health",)
    assert detect_special_categories("You are a coach, not a therapist. Never diagnose.", "system").categories == ()


def test_who_you_and_we_are_depends_on_the_role() -> None:
    # In an assistant turn "you" is the person; in a user turn it is the coach.
    assert detect_special_categories("If you take antidepressants, ask about caffeine.", "assistant").categories == ()
    assert detect_special_categories("Since you take antidepressants, skip the espresso.", "assistant").categories
    # In a system prompt "we" is the operator; in a user message it is the user and their family.
    assert detect_special_categories("We are not therapists and never diagnose.", "system").categories == ()
    assert detect_special_categories("What can we do? We are not coping since the miscarriage.", "user").categories


def shipped_tables() -> dict[str, Any]:
    return json.loads(resources.files("upcoach.privacy").joinpath("data/special_category.json").read_text("utf-8"))


def test_the_shipped_rule_tables_are_valid_and_cover_every_language() -> None:
    parsed = parse_rules(shipped_tables())
    names = {name for name, _, _, _ in parsed.rules}
    for category in (*CATEGORIES, "self_harm"):
        assert {f"{category}.{lang}" for lang in LANGUAGES} <= names, category


# --- the languages of issue 21: a few native sentences each, the scripts' own traps ------------------------------

NEW_LANGUAGE_DATA = [
    ("nl", "Ik slik al jaren lithium.", {"medication"}),
    ("nl", "Mijn vrouw en ik zijn via ivf zwanger geworden.", {"pregnancy"}),
    ("pl", "Od roku choruję na depresję.", {"mental_health"}),
    ("pl", "Jestem członkiem związku zawodowego.", {"union_membership"}),
    ("tr", "ŞEKER HASTASIYIM ve insülin kullanıyorum.", {"health", "medication"}),  # upper-case I folds to i
    ("tr", "Eşcinsel olduğumu ailem bilmiyor.", {"sexual_orientation"}),
    ("ar", "وأنا مصابة بالسكري منذ سنتين.", {"health"}),  # proclitic wa- and bi-al- before the word
    ("ar", "أُعاني من الاكتئاب.", {"mental_health"}),  # vowel marks fold away
    ("hi", "मेरी बहन को कैंसर है और मैं बहुत डरा हुआ हूँ।", {"health"}),
    ("hi", "मैं थेरेपी ले रहा हूँ।", {"mental_health"}),
    ("ja", "うつ病で心療内科に通っています。", {"mental_health"}),
    ("ja", "私はゲイです。", {"sexual_orientation"}),
]
NEW_LANGUAGE_TALK = [
    "Ik wil beter slapen en minder koffie drinken.",
    "I have a blind spot when it comes to feedback.",
    "Jestem zmęczony po pracy i chcę więcej się ruszać.",
    "Bugün çok yorgunum, biraz yürüyüş yapmak istiyorum.",
    "أريد أن أترك بصمة في عملي.",  # "leave a mark", not a fingerprint
    "मैं रोज़ सुबह दौड़ना चाहता हूँ।",
    "明日のプレゼン、がんばります。",  # がんばる (do one's best) is not がん (cancer)
    "ケイさんと一緒にジムに行きます。",  # Kei, a name, is not ゲイ once voicing marks are kept
    "Vado a Roma per lavoro.",
]


@pytest.mark.parametrize(("lang", "text", "categories"), NEW_LANGUAGE_DATA)
def test_the_new_languages_find_data(lang: str, text: str, categories: set[str]) -> None:
    result = detect_special_categories(text)
    assert set(result.categories) == categories, (lang, result)
    assert any(name.endswith(f".{lang}") for name in result.matches)


@pytest.mark.parametrize("text", NEW_LANGUAGE_TALK)
def test_the_new_languages_leave_wellness_talk_alone(text: str) -> None:
    assert detect_special_categories(text).categories == ()


def test_a_system_prompt_in_a_new_language_is_an_instruction_not_data() -> None:
    prompt = "あなたは親切なコーチです。医師ではありません。うつ病について診断しないでください。"
    assert detect_special_categories(prompt, role="system").categories == ()
    assert (
        detect_special_categories("Je bent geen therapeut. Stel geen diagnose bij depressie.", "system").categories
        == ()
    )
    assert detect_special_categories("うつ病と診断されました。", role="user").categories == ("mental_health",)


# Someone naming their job in health care, in every language: the job is not anyone's health.
PROFESSIONS = {
    "en": ["I work as a nurse.", "I'm a mental health nurse.", "My wife is a psychiatrist.", "I work at the hospital."],
    "fr": ["Je suis infirmière.", "Je travaille comme psychologue.", "Je travaille à l'hôpital."],
    "de": ["Ich bin Ärztin.", "Ich arbeite als Psychotherapeutin.", "Ich arbeite im Krankenhaus."],
    "es": ["Soy enfermera.", "Soy médico.", "Trabajo en el hospital."],
    "it": ["Sono medico.", "Lavoro come psicologa.", "Lavoro in ospedale."],
    "pt": ["Sou médico.", "Trabalho como psicóloga.", "Trabalho no hospital."],
    "nl": ["Ik ben huisarts.", "Ik werk als psycholoog.", "Ik werk in het ziekenhuis."],
    "pl": ["Jestem lekarzem.", "Pracuję jako psycholog.", "Pracuję w szpitalu."],
    "tr": ["Ben doktorum.", "Psikolog olarak çalışıyorum.", "Hastanede çalışıyorum."],
    "ar": ["أنا طبيب.", "أعمل طبيبة نفسية.", "أعمل في مستشفى."],
    "hi": ["मैं डॉक्टर हूँ।", "मैं अस्पताल में काम करती हूँ।"],
    "ja": ["私は看護師です。", "精神科医です。", "病院で働いています。"],
}


@pytest.mark.parametrize(("lang", "text"), [(lang, text) for lang, texts in PROFESSIONS.items() for text in texts])
def test_a_job_in_health_care_is_not_health_data(lang: str, text: str) -> None:
    assert detect_special_categories(text).categories == (), (lang, text)


def test_every_language_names_its_health_care_jobs() -> None:
    assert set(PROFESSIONS) == set(LANGUAGES)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("I'm a nurse and I was diagnosed with depression.", "mental_health"),
        ("I work at the hospital and my doctor put me on antidepressants.", "medication"),
        ("Je suis infirmière et j'ai un cancer.", "health"),
        ("Ich bin Ärztin und habe Krebs.", "health"),
        ("I'm seeing a therapist.", "mental_health"),
        ("I was in the hospital last week.", "health"),
        ("Ben doktorum dedi ki ameliyat gerekiyor.", "health"),  # "my doctor said": not a job
    ],
)
def test_health_said_by_someone_in_health_care_still_counts(text: str, category: str) -> None:
    assert category in detect_special_categories(text).categories


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: d["categories"]["health"].pop("de"), "languages"),
        (lambda d: d["categories"].pop("genetic"), "must name exactly"),
        (lambda d: d["categories"]["health"]["en"].append("(unclosed"), "not a valid pattern"),
        (lambda d: d["categories"]["religion"]["en"].append("{NOPE}"), "unknown macro"),
        (lambda d: d["categories"]["religion"]["en"].append(""), "non-empty strings"),
        (lambda d: d.update(languages=["de", "fr", "es", "it", "pt"]), "languages must be"),
        (lambda d: d.update(languages=[*d["languages"], "xx"]), "languages must be"),
        (lambda d: d.update(languages=["en"]), "must have exactly the languages"),
        (lambda d: d["professions"].pop("ja"), "professions must name every language"),
        (lambda d: d["professions"]["fr"].append("(unclosed"), "not a valid pattern"),
    ],
)
def test_malformed_rule_tables_are_refused(breakage: Any, message: str) -> None:
    data = copy.deepcopy(shipped_tables())
    breakage(data)
    with pytest.raises(ValueError, match=message):
        parse_rules(data)


def test_eval_set_is_big_enough_and_half_held_out() -> None:
    dev, held = load_eval("dev"), load_eval("held")
    assert len(dev) + len(held) >= 200 and len(held) >= 100
    labels = {label for sample in dev + held for label in sample.gold}
    assert labels == set(CATEGORIES) | {"self_harm"}
    assert sum(not sample.gold for sample in dev + held) >= 40  # negatives, idioms included


@pytest.mark.parametrize("split", ["dev", "held"])
def test_eval_set_quality(split: str) -> None:
    stats = per_label(load_eval(split), detect_special_categories)
    for label, (tp, fp, fn) in stats.items():
        assert tp + fn == 0 or tp / (tp + fn) >= 0.9, (label, tp, fn)
        assert tp + fp == 0 or tp / (tp + fp) >= 0.8, (label, tp, fp)
    tp, fp, fn = stats.get("self_harm", (0, 0, 0))
    assert fp == 0 and tp / (tp + fn) >= 0.9


def test_coaching_set_is_big_enough_and_covers_every_role_and_kind() -> None:
    dev, held = load_coaching("dev"), load_coaching("held")
    assert len(dev) + len(held) >= 200 and len(held) >= 100
    for split in (dev, held):
        assert {sample.role for sample in split} == {"system", "developer", "user", "assistant", "tool"}
        assert sum(not sample.gold for sample in split) >= 50  # topic questions, instructions, explanations
        assert sum(bool(sample.gold) for sample in split) >= 50  # status statements, self-harm
        assert sum("self_harm" in sample.gold for sample in split) >= 8


@pytest.mark.parametrize("split", ["dev", "held"])
def test_coaching_set_quality(split: str) -> None:
    samples = load_coaching(split)
    tp, fp, fn = is_data(samples, detect_special_categories)
    assert tp / (tp + fp) >= 0.9 and tp / (tp + fn) >= 0.95, (tp, fp, fn)
    tp, fp, fn = per_label(samples, detect_special_categories).get("self_harm", (0, 0, 0))
    assert fp == 0 and tp / (tp + fn) >= 0.9, (tp, fp, fn)
