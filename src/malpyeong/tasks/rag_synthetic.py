"""SYNTHETIC 어문 규범 data that a tiny model can learn: for the demo and learning tests.

Not competition data, and labelled so (every id starts with ``synthetic-``). Each item is built
from one entry of a small lexicon of our own (a sentence frame, the right form, a common wrong
form, the rule that decides): a 선택형 item offers both forms in braces, a 교정형 item writes the
wrong one; the answer is the frame with the right form, ``"…"가 옳다.``, and a reason naming the
rule. The lexicon is shared by every split, so what is learnt is which form of each pair is
right: a random model gets the answer part wrong, a trained one right.
"""

from __future__ import annotations

import random

# (frame with {} for the word, right form, wrong form, the rule that decides)
LEXICON = [
    ("방을 {} 청소했다.", "깨끗이", "깨끗히", "한글 맞춤법 제51항"),
    ("숙제를 했으니 이제 놀아도 {}.", "돼요", "되요", "한글 맞춤법 제35항"),
    ("그 일은 나도 {} 있다.", "할 수", "할수", "한글 맞춤법 제42항"),
    ("명절에는 {}께 먼저 인사를 드린다.", "웃어른", "윗어른", "표준어 규정 제12항"),
    ("들판에서 {} 한 마리가 풀을 뜯는다.", "수소", "숫소", "표준어 규정 제7항"),
    ("경기 전에 다 함께 {}을 외쳤다.", "파이팅", "화이팅", "외래어 표기법 제2항"),
    ("역 앞 {}에서 친구를 만났다.", "커피숍", "커피숖", "외래어 표기법 제3항"),
    ("카메라 {}가 너무 밝았다.", "플래시", "플래쉬", "외래어 표기법 제3장"),
    ("토끼가 {} 뛰어간다.", "깡충깡충", "깡총깡총", "표준어 규정 제8항"),
    ("겨울 {}은 몹시 차갑다.", "바닷물", "바다물", "한글 맞춤법 제30항"),
    ("계약서를 {} 읽었다.", "꼼꼼히", "꼼꼼이", "한글 맞춤법 제51항"),
    ("합격자의 {}이 크게 올랐다.", "백분율", "백분률", "한글 맞춤법 제11항"),
    ("할머니께서는 {}가 많으시다.", "연세", "년세", "한글 맞춤법 제10항"),
    ("새 양복을 {} 갔다.", "맞추러", "마추러", "한글 맞춤법 제57항"),
]
OPENINGS = ["", "어제 ", "오늘 ", "그때 ", "우리는 ", "아마 "]
SELECT = '"{}" 가운데 올바른 것을 선택하고, 그 이유를 설명하세요.'
CORRECT = '다음 문장에서 어문 규범에 부합하지 않는 부분을 찾아 고치고, 그 이유를 설명하세요.\n"{}"'


def synthetic_norms(n: int, seed: int, prefix: str, *, with_output: bool = True) -> list[dict]:
    """``n`` official-layout 어문 규범 records (ids ``{prefix}-{i}``); ``with_output`` False
    leaves the output out, as the official test files do."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        frame, right, wrong, rule = rng.choice(LEXICON)
        frame = rng.choice(OPENINGS) + frame
        if rng.random() < 0.5:
            options = [right, wrong] if rng.random() < 0.5 else [wrong, right]
            kind, question = "선택형", SELECT.format(frame.replace("{}", "{" + "/".join(options) + "}"))
        else:
            kind, question = "교정형", CORRECT.format(frame.format(wrong))
        record = {"id": f"{prefix}-{i}", "input": {"question_type": kind, "question": question}}
        if with_output:
            answer = (
                f"\"{frame.format(right)}\"가 옳다. '{wrong}'가 아니라 '{right}'가 {rule}에 맞는 표기이다."
            )
            record["output"] = {"answer": answer}
        records.append(record)
    return records
