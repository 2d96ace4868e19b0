"""SYNTHETIC DCS data that a tiny model can learn: for the demo and the learning test.

Not competition data, and labelled as such (every id starts with ``synthetic-``). The summary
is one template sentence filled with facts the dialogue states: who told the story (the
speaker), when, with whom, where and what they did::

    화자2는 토요일에 민수와 함께 바다에 가서 낚시를 했다.

The dialogue says the same facts over two of the teller's lines, in one of three orders, with
small talk between them, so a model must find each fact in the dialogue and copy it into its
place in the template; a random model writes nothing of the kind
(ROUGE-1 near 0), a model that learned the template but not the facts gets its fixed words
only (about half of the summary's morphemes), and one that copies the facts gets them all. The
sentences are our own.
"""

from __future__ import annotations

import random

WHEN = ["어제", "토요일", "일요일", "지난주", "오늘", "월요일", "금요일", "연휴"]
NO_PARTICLE = {"어제", "오늘"}  # "어제 갔어", not "어제에 갔어"
PEOPLE = ["민수", "지영", "현우", "서연", "준호", "하늘", "유진", "태민", "수빈", "동현", "은지", "상민"]
PLACES = [
    "공원",
    "바다",
    "시장",
    "카페",
    "도서관",
    "박물관",
    "호수",
    "캠핑장",
    "영화관",
    "수영장",
    "식당",
    "미술관",
]
ACTIVITIES = [
    "산책",
    "낚시",
    "쇼핑",
    "공부",
    "요리",
    "운동",
    "독서",
    "등산",
    "스케치",
    "수영",
    "청소",
    "게임",
]
KEYWORDS = ["주말", "여가", "약속", "나들이"]
QUESTIONS = ["요즘 어떻게 지내?", "뭐 재미있는 일 있었어?", "무슨 일 있었어?", "얼굴이 좋아 보인다."]
SMALL_TALK = ["정말? 좋았겠다.", "우와, 부럽다.", "그랬구나.", "나도 가 보고 싶다.", "재미있었겠네."]
CLOSINGS = ["응, 정말 좋았어.", "다음에 같이 가자.", "응, 또 가려고.", "시간 가는 줄 몰랐어."]


def _has_final(word: str) -> bool:
    """Whether a Hangul word ends in a final consonant (받침), which picks the particle."""
    last = ord(word[-1]) - 0xAC00
    return 0 <= last < 11172 and last % 28 != 0


def _particle(word: str, with_final: str, without: str) -> str:
    return word + (with_final if _has_final(word) else without)


def _at(when: str) -> str:
    """The time as an adverbial: 토요일에, but 어제."""
    return when if when in NO_PARTICLE else when + "에"


def synthetic_summary(speaker: int, when: str, who: str, where: str, what: str) -> str:
    """The gold summary: the template filled with the dialogue's facts (화자1은, 화자2는: the
    particle follows the number as it is read, 일 and 이)."""
    topic = "은" if speaker == 1 else "는"
    return (
        f"화자{speaker}{topic} {_at(when)} {_particle(who, '과', '와')} 함께 "
        f"{where}에 가서 {_particle(what, '을', '를')} 했다."
    )


def _telling(when: str, who: str, where: str, what: str, rng: random.Random) -> list[str]:
    """The teller's two lines stating the four facts, in one of three shapes. Each fact is
    written as the summary writes it (토요일에, 민수와, 바다에, 낚시를), so the words to copy
    are the same tokens in the dialogue and in the summary."""
    with_who = f"{_particle(who, '과', '와')} 함께"
    what_did = f"{_particle(what, '을', '를')} 했어."
    shape = rng.randrange(3)
    if shape == 0:
        return [f"{_at(when)} {with_who} {where}에 갔어.", f"거기서 {what_did}"]
    if shape == 1:
        return [f"{with_who} {where}에 가서 {what_did}", f"{_at(when)} 있었던 일이야."]
    return [f"{_at(when)} {where}에 가서 {what_did}", f"{with_who} 갔어."]


def synthetic_dcs(n: int, seed: int, prefix: str, *, with_output: bool = True) -> list[dict]:
    """``n`` official-layout DCS records (ids ``{prefix}-{i}``); ``with_output`` False leaves
    ``output`` empty, as in a test file."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        when, who = rng.choice(WHEN), rng.choice(PEOPLE)
        where, what = rng.choice(PLACES), rng.choice(ACTIVITIES)
        teller = rng.choice((1, 2))
        asker = 3 - teller
        first, second = _telling(when, who, where, what, rng)
        turns = [(asker, rng.choice(QUESTIONS)), (teller, first), (asker, rng.choice(SMALL_TALK))]
        turns += [(teller, second)]
        if rng.random() < 0.5:
            turns += [(asker, rng.choice(SMALL_TALK)), (teller, rng.choice(CLOSINGS))]
        records.append(
            {
                "id": f"{prefix}-{i}",
                "input": {
                    "conversation": [{"speaker": s, "utterance": u} for s, u in turns],
                    "subject_keyword": [rng.choice(KEYWORDS)],
                },
                "output": synthetic_summary(teller, when, who, where, what) if with_output else "",
            }
        )
    return records
