"""SYNTHETIC 한국문화 QA data that a tiny model can learn: for the demo and the learning tests.

Not competition data, and labelled so (every id starts with ``synthetic-``). The rule is in the
text, as it often is in the official files (whose ``topic_keyword`` tends to name the answer):
a 선다형 question asks which option is the quoted culture word, the right option is that word
and the three wrong ones are everyday objects that are never asked about; 단답형 asks for the
quoted word back, 서술형 for one sentence about it. A random model is at chance on 선다형 (1/4);
one that learns to find the option the question quotes gets them all right.
"""

from __future__ import annotations

import random

TOPICS = [
    "송편", "한복", "가야금", "김치", "세배", "한옥", "온돌", "판소리", "윷놀이", "탈춤",
    "단오", "추석", "설날", "태권도", "씨름", "부채춤", "청자", "한지", "떡국", "팥죽",
]  # fmt: skip
OBJECTS = [
    "사과", "기차", "연필", "우산", "컴퓨터", "자전거", "시계", "축구공", "안경", "냉장고",
    "의자", "신문", "버스", "휴대폰", "가방", "칫솔", "모자", "풍선",
]  # fmt: skip
DOMAINS = ["풍습/문화유산", "예술", "일상생활", "역사"]


def has_final(word: str) -> bool:
    """Whether the last syllable has a final consonant (은/을/이 rather than 는/를/가)."""
    last = word[-1]
    return "가" <= last <= "힣" and (ord(last) - ord("가")) % 28 != 0


def synthetic_culture(n: int, seed: int, prefix: str, *, with_output: bool = True) -> list[dict]:
    """``n`` official-layout culture records (ids ``{prefix}-{i}``): 80% 선다형, 10% 단답형,
    10% 서술형; ``with_output`` False leaves the output out, as the official test files do."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        roll = rng.random()
        eul = "을" if has_final(topic) else "를"
        eun = "은" if has_final(topic) else "는"
        if roll < 0.8:
            kind = "선다형"
            options = rng.sample(OBJECTS, 3)
            label = rng.randrange(4)
            options.insert(label, topic)
            listed = "\t".join(f"{k}\t{o}" for k, o in enumerate(options, 1))
            question = f"다음 중 '{topic}'에 해당하는 것은?\\n{listed}"
            answer = str(label + 1)
        elif roll < 0.9:
            kind = "단답형"
            question = f"오늘 배운 전통문화 '{topic}'{eul} 한 단어로 쓰세요."
            answer = f"{topic}#{topic} 문화"
        else:
            kind = "서술형"
            question = f"'{topic}'에 대해 한 문장으로 서술하세요."
            answer = f"{topic}{eun} 한국의 전통문화 가운데 하나이다."
        record = {
            "id": f"{prefix}-{i}",
            "input": {
                "category": "문화 지식",
                "domain": rng.choice(DOMAINS),
                "question_type": kind,
                "topic_keyword": topic,
                "question": question,
            },
        }
        if with_output:
            record["output"] = {"answer": answer}
        records.append(record)
    return records
