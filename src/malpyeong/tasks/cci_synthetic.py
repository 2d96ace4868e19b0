"""SYNTHETIC CCI data that a tiny model can learn: for the demo and the learning tests.

Not competition data, and labelled as such (every id starts with ``synthetic-``). The rule is
visible in the text: the target utterance talks about one thing (a topic word), the correct
inference names that thing, and the two wrong ones name things that never occur in any
dialogue. A random model is at chance (about 1/3); a model that learns to find the option whose
word occurs in the dialogue gets them all right. The sentences are our own.
"""

from __future__ import annotations

import random

TOPICS = [
    "영화",
    "병원",
    "도서관",
    "제주도",
    "바다",
    "우산",
    "신발",
    "공원",
    "시험",
    "휴가",
    "운동",
    "요리",
    "음식",
    "날씨",
    "회사",
    "학교",
    "친구",
    "가족",
    "취미",
]
NEVER_SAID = [
    "여행",
    "빵",
    "약",
    "짐",
    "감기",
    "산책",
    "주말",
    "야근",
    "이사",
    "전화",
    "커피",
    "자전거",
    "강아지",
    "고양이",
    "수영",
    "등산",
    "노래",
    "게임",
    "책",
]
FILLERS = [
    "그래, 알겠어.",
    "정말? 몰랐어.",
    "응, 나도 그렇게 생각해.",
    "오늘 좀 피곤하다.",
    "그건 나중에 얘기하자.",
]
CATEGORIES = ["원인", "후행사건", "전제", "동기", "반응"]


def synthetic_cci(n: int, seed: int, prefix: str, *, with_output: bool = True) -> list[dict]:
    """``n`` official-layout CCI records (ids ``{prefix}-{i}``); ``with_output`` False leaves
    ``output`` empty, as in a test file."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        topic, wrong = rng.choice(TOPICS), rng.sample(NEVER_SAID, 2)
        size = rng.randint(2, 4)
        ref = rng.randrange(size)
        said = [f"요즘 {topic} 때문에 고민이야." if j == ref else rng.choice(FILLERS) for j in range(size)]
        conversation = [
            {"speaker": 1 + j % 2, "utterance": said[j], "utterance_id": f"{prefix}{i}.{j}"}
            for j in range(size)
        ]
        label = rng.randrange(3)
        options = list(wrong)
        options.insert(label, topic)
        speaker = 1 + ref % 2
        records.append(
            {
                "id": f"{prefix}-{i}",
                "input": {
                    "conversation": conversation,
                    "reference_id": [f"{prefix}{i}.{ref}"],
                    "category": rng.choice(CATEGORIES),
                    **{
                        f"inference_{k + 1}": f"{o} 이야기를 화자{speaker}가 꺼냈다."
                        for k, o in enumerate(options)
                    },
                },
                "output": f"inference_{label + 1}" if with_output else "",
            }
        )
    return records
