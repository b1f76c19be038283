"""Regenerates the JSONL data of the made-up tasks (deterministic; the files in the repo are its output).

    python tasks/_make_data.py tasks

Every sentence, word list and rule here was written for pytest-icl, so no pretrained model can have
seen these examples.  Splits: train 40 (demonstration pool), validation 24 (choosing the FT lr), test 64.
"""

import json
import random
from pathlib import Path


def write(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def split(rows, rng, n_train=40, n_val=24, n_test=64):
    rng.shuffle(rows)
    assert len(rows) >= n_train + n_val + n_test, len(rows)
    return rows[:n_train], rows[n_train : n_train + n_val], rows[n_train + n_val : n_train + n_val + n_test]


# ---------------------------------------------------------------- sentiment
NOUNS = [
    "The film",
    "The sequel",
    "The soundtrack",
    "The ending",
    "The cast",
    "The script",
    "The director's new picture",
    "This documentary",
    "The animation",
    "The lead actress",
    "The second half",
    "This comedy",
]
POS = [
    "is a warm and funny delight",
    "kept me smiling from start to finish",
    "is beautifully shot and moving",
    "deserves every award it gets",
    "is clever, tender and full of heart",
    "left the whole audience cheering",
    "is the best thing I have seen this year",
    "is sharp, witty and wonderfully acted",
    "made me want to watch it again right away",
    "is a joyful little masterpiece",
    "surprised me in the best possible way",
    "is gripping and gorgeous",
]
NEG = [
    "is a dull and tiresome mess",
    "bored me from start to finish",
    "is clumsy, ugly and forgettable",
    "wastes every talent involved",
    "is loud, lazy and painfully long",
    "made half the audience walk out",
    "is the worst thing I have seen this year",
    "is flat, stiff and badly acted",
    "made me want my money back",
    "is a joyless little disaster",
    "disappointed me in every possible way",
    "is confusing and dreary",
]


def sentiment(rng):
    rows = []
    for lab, preds in ((0, NEG), (1, POS)):
        combos = [f"{n} {p}." for n in NOUNS for p in preds]
        rng.shuffle(combos)
        rows += [{"text": t, "label": lab} for t in combos[:64]]
    return rows


# ---------------------------------------------------------------- topic
TOPIC = {
    0: (
        [
            "The goalkeeper",
            "Our coach",
            "The home team",
            "The young sprinter",
            "The tennis champion",
            "The captain",
            "The referee",
            "The rookie striker",
        ],
        [
            "won the match in extra time",
            "trained hard before the final",
            "scored twice in the second half",
            "broke the national record on the track",
            "was sent off after a rough tackle",
            "lifted the cup in front of the fans",
            "missed the penalty kick",
            "signed a contract with a rival club",
        ],
    ),
    1: (
        ["The chef", "My grandmother", "The bakery", "The new cafe", "Our neighbour", "The cook", "The street vendor", "The restaurant"],
        [
            "baked fresh bread with garlic and butter",
            "served a spicy noodle soup",
            "made pancakes with honey for breakfast",
            "roasted chicken with lemon and thyme",
            "cooked a pot of tomato sauce",
            "sold warm apple pie",
            "fried rice with eggs and onions",
            "grilled fish with salty potatoes",
        ],
    ),
    2: (
        [
            "The forecast",
            "The sky",
            "The morning news",
            "The storm",
            "The weather service",
            "The north wind",
            "The cold front",
            "The spring sun",
        ],
        [
            "promised heavy rain all afternoon",
            "warned of snow on the hills tonight",
            "brought thunder and strong gusts",
            "turned grey before a long drizzle",
            "melted the frost on the fields",
            "left thick fog over the valley",
            "kept temperatures below freezing",
            "cleared the clouds by noon",
        ],
    ),
    3: (
        [
            "The bank",
            "The stock market",
            "The company",
            "The investor",
            "The central bank",
            "My accountant",
            "The startup",
            "The tax office",
        ],
        [
            "raised interest rates again",
            "lost money on bonds this quarter",
            "reported record profits",
            "cut the budget for next year",
            "paid a large dividend to shareholders",
            "filed the annual tax return",
            "borrowed millions to expand",
            "saw share prices fall sharply",
        ],
    ),
}


def topic(rng):
    rows = []
    for lab, (subj, preds) in TOPIC.items():
        combos = [f"{s} {p}." for s in subj for p in preds]
        rng.shuffle(combos)
        rows += [{"text": t, "label": lab} for t in combos[:32]]
    return rows


# ---------------------------------------------------------------- syllables
SYL = ["ka", "lu", "mi", "to", "pe", "ri", "so", "na", "du", "fe", "go", "bi", "zo", "ta", "ne", "vu"]


def syllables(rng, n=140):
    rows, seen = [], set()
    while len(rows) < n:
        s = tuple(rng.sample(SYL, 3))
        if s in seen:
            continue
        seen.add(s)
        ch = list(s)
        rng.shuffle(ch)
        rows.append({"sequence": " ".join(s), "choices": ch, "label": ch.index(s[0])})
    return rows


TRIPLES = """hot cold warm|big small large|fast slow quick|happy sad glad|light dark bright|open closed unlocked|early late prompt
strong weak powerful|rich poor wealthy|wet dry damp|loud quiet noisy|full empty packed|young old youthful|high low tall
hard soft firm|thick thin dense|clean dirty spotless|brave cowardly bold|cheap expensive inexpensive|deep shallow profound|narrow wide tight
heavy light weighty|sharp blunt pointed|smooth rough sleek|sweet sour sugary|polite rude courteous|happy miserable cheerful|sick healthy ill
true false correct|begin end start|win lose triumph|buy sell purchase|accept refuse agree|arrive leave reach|remember forget recall
push pull shove|increase decrease raise|ancient modern old|generous stingy giving|visible invisible seen|friend enemy pal|question answer query
success failure victory|love hate adore|laugh cry giggle|awake asleep alert|safe dangerous secure|simple complicated easy|major minor main
inside outside within|above below over|before after prior|always never forever|everything nothing all|present absent attending|maximum minimum peak
victory defeat triumph|clever stupid smart|careful careless cautious|honest dishonest truthful|patient impatient tolerant|possible impossible feasible|legal illegal lawful
calm anxious relaxed|noisy silent loud|tidy messy neat|fresh stale new|fierce gentle savage|humble arrogant modest|optimistic pessimistic hopeful
expand shrink grow|attack defend assault|borrow lend loan|include exclude contain|praise criticize compliment|reward punish prize|construct demolish build
entrance exit doorway|sunrise sunset dawn|summer winter summertime|north south northward|wisdom foolishness insight|hero villain champion|truth lie fact
frequent rare common|temporary permanent brief|rapid gradual swift|vertical horizontal upright|internal external inner|private public personal|genuine fake authentic
shiny dull glossy|tiny huge minute|float sink drift|freeze melt chill|whisper shout murmur|hide reveal conceal|gather scatter collect
rise fall ascend|dawn dusk daybreak|ally rival partner|asset liability resource|innocent guilty blameless|fertile barren fruitful|sober drunk clearheaded
wide narrow broad|crooked straight bent|guest host visitor|teacher student instructor|buyer seller purchaser|employer employee boss|parent child mother
loose tight slack|solid liquid firm|import export bring|input output entry|minimum maximum least|inhale exhale breathe|descend climb drop
joy sorrow delight|courage fear bravery|peace war calm|wealth poverty riches|strength weakness power|order chaos arrangement|beauty ugliness loveliness
accept reject approve|advance retreat progress|allow forbid permit|connect disconnect link|encourage discourage inspire|enter exit go|obey disobey follow
bitter sweet harsh|blunt sharp dull|bold timid daring|calm stormy still|cruel kind harsh|eager reluctant keen|fancy plain elaborate
thrilled bored excited|spacious cramped roomy|graceful clumsy elegant|cheerful gloomy jolly|mild severe gentle|ordinary extraordinary usual|regular irregular normal"""


def antonyms(rng):
    triples, seen = [], set()
    for t in TRIPLES.replace("\n", "|").split("|"):
        w, a, syn = t.split()
        if w not in seen:
            seen.add(w)
            triples.append((w, a, syn))
    rows = []
    for i, (w, a, syn) in enumerate(triples):
        other = rng.choice([t[1] for t in triples if t[1] not in (w, a, syn)])
        ch = [a, syn, other]
        rng.shuffle(ch)
        rows.append({"word": w, "choices": ch, "label": ch.index(a)})
    return rows


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1])
    for name, folder, fn in (
        ("sentiment", "sentiment_blue_red", sentiment),
        ("topic", "topic_nonce", topic),
        ("syllables", "syllable_first", syllables),
        ("antonyms", "antonym_choice", antonyms),
    ):
        rng = random.Random(f"pytest-icl-{name}")
        tr, va, te = split(fn(rng), rng)
        for sp, rows in (("train", tr), ("validation", va), ("test", te)):
            write(out / folder, sp, rows)
