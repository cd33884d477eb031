"""The demo preference set: generated, deterministic, no downloads.

Each example asks a question from a fixed bank and prefers a good answer over one with a single,
learnable flaw: off-topic, cut off mid-sentence, rude, unhelpful, repetitive, or factually wrong (capital
cities). The held-out split asks in other phrasings (questions and capital-city answers) over the same bank, so it
measures whether the model learned the preferences rather than the exact strings.

:func:`demo_criteria_rows` gives the same pairs as per-criterion rankings for a criteria model: each flaw
loses on its criterion (on_topic, complete, polite, correct) and ties on the others.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

TASKS: tuple[tuple[str, str], ...] = (
    ("water a cactus", "Water it about once every two weeks in summer, and let the soil dry out completely between waterings."),
    ("boil an egg", "Put the egg in boiling water for about nine minutes, then cool it in cold water before peeling."),
    ("fall asleep faster", "Keep a regular bedtime, avoid screens for an hour before bed, and keep the bedroom cool and dark."),
    ("learn a new language", "Practice a little every day, learn the most common words first, and speak with native speakers early."),
    ("save money on groceries", "Plan meals for the week, shop with a list, and buy staples like rice and beans in bulk."),
    ("clean a cast iron pan", "Rinse it with hot water, scrub with salt instead of soap, dry it fully and rub in a thin layer of oil."),
    ("start running", "Begin with short runs mixed with walking, three times a week, and add a few minutes each week."),
    ("write a cover letter", "Address the hiring manager, show how your experience fits the role, and keep it to one page."),
    ("keep basil alive", "Give it six hours of sun, water when the top of the soil is dry, and pinch off the flowers."),
    ("reduce stress", "Take short walks, breathe slowly for a few minutes, and talk to someone you trust about what worries you."),
    ("make cold brew coffee", "Mix coarse coffee with cold water, let it steep in the fridge for about sixteen hours, then strain it."),
    ("change a flat tire", "Loosen the nuts, lift the car with the jack, swap in the spare, and tighten the nuts in a star pattern."),
    ("study for an exam", "Spread study over several days, test yourself with practice questions, and sleep well the night before."),
    ("remove a coffee stain", "Blot the stain, rinse it from the back with cold water, and treat it with a little dish soap."),
    ("train a puppy to sit", "Hold a treat above its nose, move it back until the puppy sits, then reward it right away."),
    ("bake bread at home", "Mix flour, water, salt and yeast, let the dough rise until doubled, shape it, and bake until golden."),
    ("back up my photos", "Copy them to an external drive and to a cloud service, so you always have two separate copies."),
    ("stay focused while working", "Work in short blocks with breaks, silence notifications, and keep only one task open at a time."),
    ("lower my electricity bill", "Switch to LED bulbs, unplug idle chargers, and run the washing machine with full loads on cold."),
    ("prepare for a job interview", "Research the company, practice answers to common questions, and prepare a few questions of your own."),
    ("care for a goldfish", "Keep it in a large filtered tank, change part of the water weekly, and feed it a small pinch once a day."),
    ("make a budget", "List your income, track every expense for a month, and set limits for each category you spend on."),
    ("sharpen a kitchen knife", "Hold the blade at a steady low angle on a whetstone and draw it across evenly on both sides."),
    ("improve my handwriting", "Write slowly, hold the pen loosely, and practice the same letters for a few minutes every day."),
    ("grow tomatoes", "Plant them in full sun, water deeply at the base, and tie the stems to stakes as they grow."),
    ("get rid of fruit flies", "Set a small bowl of vinegar with a drop of dish soap, and keep ripe fruit in the fridge."),
    ("memorize a speech", "Learn it in small sections, rehearse out loud, and practice in front of a friend or a mirror."),
    ("keep my laptop battery healthy", "Avoid keeping it at full charge all day, keep it cool, and let it cycle now and then."),
    ("make new friends in a new city", "Join a club or class about something you enjoy, and say yes to invitations even when shy."),
    ("cook rice on the stove", "Rinse the rice, use about one and a half cups of water per cup, simmer covered for fifteen minutes."),
)

QUESTION_FORMS_TRAIN = ("How do I {t}?", "What's the best way to {t}?", "Can you tell me how to {t}?",
                        "Any tips on how to {t}?", "I want to {t}. What should I do?")
QUESTION_FORMS_HELDOUT = ("Could you explain how to {t}?", "What should I know to {t}?", "Help me {t}, please.")

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Egypt", "Cairo"), ("Brazil", "Brasilia"),
    ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Portugal", "Lisbon"),
    ("Greece", "Athens"), ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"),
    ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Ireland", "Dublin"),
    ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Turkey", "Ankara"), ("Thailand", "Bangkok"),
)

POLITE = ("Sure, happy to help! ", "Good question. ", "Of course. ", "Glad you asked! ")
RUDE = ("Ugh, that's a stupid question. ", "Figure it out yourself, but fine. ", "Whatever. ",
        "Are you serious? Everyone knows this. ")
UNHELPFUL = ("I don't know.", "I can't help with that.", "Why do you even care about that?",
             "No idea, look it up somewhere else.", "That's not something I want to talk about.")


def _off_topic(rng: random.Random, i: int, answer: str) -> str:
    other = rng.choice([a for j, (_, a) in enumerate(TASKS) if j != i])
    return other


def _cut_off(rng: random.Random, i: int, answer: str) -> str:
    cut = rng.randint(len(answer) * 3 // 10, len(answer) * 6 // 10)
    return answer[:cut].rstrip(" ,")


def _rude(rng: random.Random, i: int, answer: str) -> str:
    return rng.choice(RUDE) + answer


def _unhelpful(rng: random.Random, i: int, answer: str) -> str:
    return rng.choice(UNHELPFUL)


def _repetitive(rng: random.Random, i: int, answer: str) -> str:
    first = answer.split(",")[0].rstrip(".")
    return ", ".join([first] * rng.randint(3, 5)) + "."


FLAWS: dict[str, Callable[[random.Random, int, str], str]] = {
    "off_topic": _off_topic, "cut_off": _cut_off, "rude": _rude, "unhelpful": _unhelpful, "repetitive": _repetitive,
}


def _task_example(rng: random.Random, forms: tuple[str, ...]) -> dict[str, Any]:
    i = rng.randrange(len(TASKS))
    task, answer = TASKS[i]
    flaw = rng.choice(sorted(FLAWS))
    rejected = FLAWS[flaw](rng, i, answer)
    chosen = rng.choice(POLITE) + answer if flaw == "rude" else answer
    question = rng.choice(forms).format(t=task)
    prompt: Any = question
    if rng.random() < 0.2:  # a share of chat-message prompts exercises the conversational path
        prompt = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": question}]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, "kind": flaw}


def _capital_example(rng: random.Random, heldout: bool) -> dict[str, Any]:
    country, capital = rng.choice(CAPITALS)
    wrong = rng.choice([c for _, c in CAPITALS if c != capital])
    if heldout:
        prompt, good, bad = (f"Which city is the capital of {country}?", f"{capital} is the capital of {country}.",
                             f"{wrong} is the capital of {country}.")
    else:
        prompt, good, bad = (f"What is the capital of {country}?", f"The capital of {country} is {capital}.",
                             f"The capital of {country} is {wrong}.")
    return {"prompt": prompt, "chosen": good, "rejected": bad, "kind": "wrong_fact"}


def demo_rows(
    split: str = "train", n_train: int = 2400, n_heldout: int = 400, seed: int = 1234
) -> list[dict[str, Any]]:
    """Rows of the demo set: ``split`` is ``"train"`` or ``"heldout"``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"demo split must be 'train' or 'heldout', got {split!r}")
    heldout = split == "heldout"
    rng = random.Random(seed + (1 if heldout else 0))
    forms = QUESTION_FORMS_HELDOUT if heldout else QUESTION_FORMS_TRAIN
    n = n_heldout if heldout else n_train
    return [_capital_example(rng, heldout) if rng.random() < 0.2 else _task_example(rng, forms) for _ in range(n)]


CRITERION_OF_FLAW = {"off_topic": "on_topic", "unhelpful": "on_topic", "cut_off": "complete",
                     "repetitive": "complete", "rude": "polite", "wrong_fact": "correct"}
"""The criterion each flaw offends."""
CRITERIA = ("complete", "correct", "on_topic", "polite")


def demo_criteria_rows(split: str = "train") -> list[dict[str, Any]]:
    """The demo pairs as per-criterion rankings: the good reply wins on the flaw's criterion, ties elsewhere."""
    rows = []
    for row in demo_rows(split):
        offended = CRITERION_OF_FLAW[row["kind"]]
        rankings: dict[str, Any] = {c: [0, 1] if c == offended else [[0, 1]] for c in CRITERIA}
        rows.append({"prompt": row["prompt"], "completions": [row["chosen"], row["rejected"]],
                     "criteria_rankings": rankings, "kind": row["kind"]})
    return rows
