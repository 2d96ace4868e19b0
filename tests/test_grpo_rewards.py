"""GRPO's rewards and group statistics, without training: each task's rewards on hand-written
completions (right, wrong, broken format), the weights by name, a user's reward by dotted path,
the zero-spread groups, the filter's epochs and sampler, and trl's per-reward normalisation
(``multi_objective_aggregation``) against a hand computation."""

from __future__ import annotations

import json
import math

import pytest
from conftest import ROOT, SAMPLES, load_script

from malpyeong.data import load_items
from malpyeong.errors import UserError
from malpyeong.tasks import get_task
from malpyeong.training.grpo import GroupFilter
from malpyeong.training.rewards import parse_reward_weights, reward_set, zero_spread


def scores(task, item, text: str) -> dict[str, float]:
    return {r.name: r([item], [text])[0] for r in task.rewards()}


def first(task_name: str, file: str):
    task = get_task(task_name)
    return task, load_items(SAMPLES / file, task)[0]


# ------------------------------------------------------------------------------ each task


def test_cci_rewards_format_and_correct(cci_record):
    task = get_task("cci")
    item = task.parse_item(cci_record, [])  # gold: inference_1 = A
    assert scores(task, item, "A") == {"format": 1.0, "correct": 1.0}
    assert scores(task, item, "A. 화자2는 맑은 날씨를 즐기고 싶어 한다.") == {"format": 1.0, "correct": 1.0}
    assert scores(task, item, "근거를 보면 그렇다.\n정답: A") == {"format": 1.0, "correct": 1.0}
    assert scores(task, item, "B") == {"format": 1.0, "correct": 0.0}
    assert scores(task, item, "잘 모르겠어요") == {"format": 0.0, "correct": 0.0}
    assert [r.weight for r in task.rewards()] == [0.2, 1.0]
    with pytest.raises(UserError, match="no text for BERTScore"):
        task.rewards(bertscore_model="some/model")


def test_dcs_rewards_rouge1_and_a_repeated_sentence(dcs_record):
    task = get_task("dcs")
    dcs_record["output"] = "두 화자는 요리에 대해 이야기했다."
    item = task.parse_item(dcs_record, [])
    assert scores(task, item, "두 화자는 요리에 대해 이야기했다.") == {"format": 1.0, "quality": 1.0}
    # Mecab: 두/화자/는/요리|운동/에/대해/이야기/했/다 -- 8 of 9 morphemes in common
    got = scores(task, item, "두 화자는 운동에 대해 이야기했다.")
    assert got["format"] == 1.0 and got["quality"] == pytest.approx(8 / 9)
    looped = scores(task, item, "두 화자는 요리에 대해 이야기했다. 두 화자는 요리에 대해 이야기했다.")
    assert looped["format"] == 0.0 and looped["quality"] == 1.0  # the repeat is cut before ROUGE
    assert scores(task, item, "<eos>") == {"format": 0.0, "quality": 0.0}


def test_memory_rewards_schema_turn_count_and_facts():
    task, item = first("memory", "memory_dev.jsonl")
    gold = task.target(item)
    assert scores(task, item, gold) == {"format": 1.0, "correct": 1.0, "quality": 1.0}
    state = json.loads(gold)
    state["memory_state"]["turn_count"] = item.turn_count + 1  # a wrong count
    state["memory_state"]["key_facts"] = state["memory_state"]["key_facts"][:1]  # one of two facts
    got = scores(task, item, json.dumps(state, ensure_ascii=False))
    # turn count wrong (0); facts: precision 1, recall 1/2 -> F1 2/3; correct = (0 + 2/3) / 2
    assert got["format"] == 1.0 and got["correct"] == pytest.approx(1 / 3)
    assert scores(task, item, f"```json\n{gold}\n```")["format"] == 0.5  # only the repair reads it
    assert scores(task, item, gold[:-2])["format"] == 0.0  # cut short: nothing reads it
    assert scores(task, item, "기억나지 않습니다") == {"format": 0.0, "correct": 0.0, "quality": 0.0}
    del state["memory_state"]["turn_count"]  # no count: the schema as written fails
    assert scores(task, item, json.dumps(state, ensure_ascii=False))["format"] == 0.5


def test_qa_rewards_answer_line_exact_match():
    task, item = first("qa", "qa_dev.jsonl")
    gold = task.target(item)
    assert scores(task, item, gold) == {"format": 1.0, "correct": 1.0, "quality": 1.0}
    got = scores(task, item, "###답: 모르겠습니다")
    assert got["format"] == 1.0 and got["correct"] == 0.0
    assert scores(task, item, item.answer)["format"] == 0.0  # no answer line
    assert scores(task, item, item.answer)["correct"] == 1.0  # but the answer is read


def test_chat_rewards_one_line_and_rouge_l():
    task, item = first("chat", "chat_dev.jsonl")
    assert scores(task, item, item.reply) == {"format": 1.0, "quality": 1.0}
    got = scores(task, item, f"{item.reply}\n준호: 그럼 가자.")
    assert got["format"] == 0.0 and got["quality"] == 1.0  # the first line is the reply
    assert scores(task, item, "  ") == {"format": 0.0, "quality": 0.0}


def test_rag_rewards_official_shape_answer_match_and_alternatives():
    task = get_task("rag")
    record = {
        "id": "r1",
        "input": {
            "question_type": "선택형",
            "question": '"값이 {싸다/저렴하다}." 가운데 올바른 것을 고르시오.',
        },
        "output": {"answer": '"값이 싸다."#"값이 저렴하다."가 옳다. 두 말 모두 표준어이다.'},
    }
    item = task.parse_item(record, [])
    # the second '#' alternative; reasons: 두/말/모두/표준어/이/다 against 두/말/은/... -> 12/13
    got = scores(task, item, '"값이 저렴하다."가 옳다. 두 말은 모두 표준어이다.')
    assert got == {"format": 1.0, "correct": 1.0, "quality": pytest.approx(12 / 13)}
    # the scorer splits at the phrase before the alternatives: the first one never matches
    got = scores(task, item, '"값이 싸다."가 옳다. 두 말 모두 표준어이다.')
    assert got == {"format": 1.0, "correct": 0.0, "quality": 1.0}
    assert scores(task, item, '"값이 저렴하다."가 옳다.') == {"format": 0.5, "correct": 1.0, "quality": 0.0}
    assert scores(task, item, "값이 저렴하다가 옳다")["format"] == 0.5  # the phrase, not the shape
    assert scores(task, item, "잘 모르겠습니다") == {"format": 0.0, "correct": 0.0, "quality": 0.0}


def test_culture_rewards_per_question_type():
    task = get_task("culture")
    info = {"category": "문화", "domain": "예술", "topic_keyword": "가야금"}
    choice = task.parse_item(
        {
            "id": "c1",
            "input": {
                **info,
                "question_type": "선다형",
                "question": "전통 악기는?\n1\t가야금 2\t사과 3\t기차",
            },
            "output": {"answer": "1"},
        },
        [],
    )
    short = task.parse_item(
        {
            "id": "c2",
            "input": {**info, "question_type": "단답형", "question": "목민심서를 쓴 사람은?"},
            "output": {"answer": "정약용 # 다산"},
        },
        [],
    )
    essay = task.parse_item(
        {
            "id": "c3",
            "input": {**info, "question_type": "서술형", "question": "김치에 대해 서술하시오."},
            "output": {"answer": "김치는 발효 음식이다."},
        },
        [],
    )
    assert scores(task, choice, "1") == {"format": 1.0, "correct": 1.0, "quality": None}
    assert scores(task, choice, "1번") == {"format": 0.5, "correct": 1.0, "quality": None}  # read as 1
    assert scores(task, choice, "2") == {"format": 1.0, "correct": 0.0, "quality": None}
    assert scores(task, choice, "모르겠다") == {"format": 0.0, "correct": 0.0, "quality": None}
    assert scores(task, short, "다산") == {"format": 1.0, "correct": 1.0, "quality": None}  # an alternative
    assert scores(task, short, " 정약용 ") == {"format": 1.0, "correct": 1.0, "quality": None}
    assert scores(task, short, "정약용 다산")["correct"] == 0.0
    assert scores(task, short, "다산\n정약용이다") == {"format": 0.5, "correct": 1.0, "quality": None}
    assert scores(task, essay, "김치는 발효 음식이다.") == {"format": 1.0, "correct": None, "quality": 1.0}
    looped = scores(task, essay, "김치는 음식이다. 김치는 음식이다.")
    assert looped["format"] == 0.5 and looped["correct"] is None and 0 < looped["quality"] < 1


# ------------------------------------------------------------------------------ weights, user rewards


def test_weights_by_name_and_their_mistakes(cci_record):
    assert parse_reward_weights("format=0.2, correct=1,quality=0.5") == {
        "format": 0.2,
        "correct": 1.0,
        "quality": 0.5,
    }
    assert parse_reward_weights({"format": 0, "correct": 2}) == {"format": 0.0, "correct": 2.0}
    for bad, message in [
        ("format=abc", "not a number"),
        ("format", "not name=weight"),
        ("=1", "without a reward name"),
        ("format=1,format=2", "weighted twice"),
        ("format=nan", "not a number"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_reward_weights(bad)
    task = get_task("cci")
    items = [task.parse_item(cci_record, [])]
    rewards = reward_set(task, items, {"correct": 2.0})
    assert rewards.as_dict() == {"format": 0.2, "correct": 2.0}
    with pytest.raises(UserError, match="no reward called 'quality' for task cci") as err:
        reward_set(task, items, {"quality": 1.0})
    assert err.value.hint == "rewards: format, correct"
    with pytest.raises(UserError, match="every reward has weight 0"):
        reward_set(task, items, {"format": 0, "correct": 0})


def test_user_reward_by_path_gets_trl_columns(tmp_path, cci_record):
    (tmp_path / "mine.py").write_text(
        "def short(prompts, completions, reference, **kw):\n"
        "    return [float(c.strip() == r) for c, r in zip(completions, reference)]\n",
        encoding="utf-8",
    )
    task = get_task("cci")
    items = [task.parse_item(cci_record, [])]
    rewards = reward_set(task, items, {"short": 0.5}, [f"{tmp_path / 'mine.py'}:short"])
    assert rewards.names == ("format", "correct", "short") and rewards.weights == (0.2, 1.0, 0.5)
    correct, short = rewards.funcs[1], rewards.funcs[2]
    assert correct(["p", "p"], ["A", "C"], row=[0, 0]) == [1.0, 0.0]
    assert short(["p", "p"], ["A ", "B"], reference=["A", "A"]) == [1.0, 0.0]
    for path, message in [
        (f"{tmp_path / 'none.py'}:short", "file not found"),
        (f"{tmp_path / 'mine.py'}:long", "'long' is not a function"),
        ("no_such_module_here.fn", "cannot import no_such_module_here"),
        ("fn", "names no module"),
    ]:
        with pytest.raises(UserError, match=message):
            reward_set(task, items, {}, [path])


def test_a_bad_weight_is_one_line_and_exit_2(tmp_path, capsys, cci_record):
    from malpyeong.cli import run_cli

    data = tmp_path / "train.json"
    data.write_text(json.dumps([cci_record], ensure_ascii=False), encoding="utf-8")
    main = load_script(ROOT / "orpo" / "train.py").main
    argv = ["--algorithm", "grpo", "--model", "no/model", "--task", "cci", "--train_file", str(data)]
    for extra, message in [
        (["--reward_weights", "format=0.2,correct=x"], "field 'reward_weights': the weight of 'correct'"),
        (["--reward_weights", "quality=1"], "no reward called 'quality' for task cci"),
        (["--multi_objective_aggregation", "mean"], "field 'multi_objective_aggregation': unknown value"),
        (["--use_vllm", "true"], "vLLM generates on a GPU only"),
    ]:
        assert run_cli(main, argv + extra) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
    for argv, message in [
        (["--algorithm", "ppo", "--model", "m"], "field 'algorithm': unknown value 'ppo'"),
        (["--algorithm", "grpo", "--model", "m", "--task", "cci"], "field 'train_file': no training data"),
    ]:
        assert run_cli(main, argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


# ------------------------------------------------------------------------------ groups


def test_zero_spread_in_either_aggregation():
    nan = math.nan
    rewards = [  # completions x (format, correct); groups of 2
        [1, 0],
        [1, 0],  # all the same: flat either way
        [1, 1],
        [0, 1],  # format differs
        [1, 1],
        [0, 2],  # the weighted sums tie (1 + 1 == 0 + 2) but each reward differs
        [nan, 1],
        [1, 1],  # format missing on one: trl sums it as 0 (sums differ); normalised alone, flat
    ]
    weights = [1.0, 1.0]
    assert zero_spread(rewards, weights, 2, "sum_then_normalize").tolist() == [True, False, True, False]
    assert zero_spread(rewards, weights, 2, "normalize_then_sum").tolist() == [True, False, False, True]
    # a reward of weight 0 moves nothing: only the weighted ones count
    assert zero_spread(rewards, [0.0, 1.0], 2, "normalize_then_sum").tolist() == [True, True, False, True]
    assert zero_spread(rewards, [0.0, 1.0], 4, "sum_then_normalize").tolist() == [False, False]


def test_the_filter_drops_last_epochs_flat_prompts_and_resumes(tmp_path):
    f = GroupFilter(drop=True)
    assert f.next_epoch() == set()  # epoch 1: nothing known yet
    f.observe([3, 5, 7], [True, False, True])
    f.observe([9], [True])
    assert f.next_epoch() == {3, 7, 9}  # epoch 2 leaves them out
    f.observe([1], [True])
    state = f.state()
    assert state["attributes"] == {"dropped": [3, 7, 9], "seen": [1]}
    (tmp_path / "trainer_state.json").write_text(
        json.dumps({"stateful_callbacks": {"GroupFilter": state}}), encoding="utf-8"
    )
    g = GroupFilter(drop=True)
    g.restore(tmp_path)
    assert g.next_epoch() == {3, 7, 9}  # the resumed epoch keeps its set
    g.observe([2], [True])
    assert g.next_epoch() == {1, 2}  # and the next one drops what the epoch found
    assert GroupFilter(drop=False).next_epoch() == set()


def test_the_filtered_sampler_keeps_trl_order_without_the_dropped():
    from trl.trainer.utils import RepeatSampler

    from malpyeong.training.grpo import grpo_trainer_class

    cls = grpo_trainer_class()
    sampler_cls = cls.sampler_class
    data = list(range(8))
    plain = list(RepeatSampler(data, mini_repeat_count=2, batch_size=2, repeat_count=1, seed=7))
    f = GroupFilter(drop=True)
    rows = [10 + i for i in range(8)]  # the rows the rewards know the prompts by
    sampler = sampler_cls(
        f, rows, data_source=data, mini_repeat_count=2, batch_size=2, repeat_count=1, seed=7
    )
    assert list(sampler) == plain  # epoch 1: trl's order
    f.observe([10, 13], [True, True])
    second = list(sampler)
    assert not {0, 3} & set(second) and len(second) == 2 * 6
    f.observe(list(range(10, 17)), [True] * 7)  # only one prompt would be left: none is dropped
    assert sorted(set(list(sampler))) == list(range(8))


# ------------------------------------------------------------------------------ trl's normalisation


@pytest.fixture(scope="module")
def one_group_trainer(tiny_models, tmp_path_factory):
    """trl's GRPOTrainer as our runs build it, on the tiny Llama, with two rewards that return
    fixed values (so the advantages can be worked out by hand)."""
    from datasets import Dataset

    from malpyeong.models.backbones import get_backbone, load_model, load_tokenizer
    from malpyeong.training.grpo import grpo_config_class, grpo_trainer_class

    path = str(tiny_models["llama"])
    model = load_model(path, "full", backbone=get_backbone(path))
    tok = load_tokenizer(path, get_backbone(path))

    def first_reward(prompts, completions, **_):
        return [1.0, 0.0, 0.0, 0.0]

    def second_reward(prompts, completions, **_):
        return [0.0, 0.0, 3.0, 3.0]

    def build(aggregation: str):
        config = grpo_config_class()(
            output_dir=str(tmp_path_factory.mktemp("grpo")),
            use_cpu=True,
            num_generations=4,
            per_device_train_batch_size=4,
            max_completion_length=2,
            report_to="none",
            reward_weights=[1.0, 0.5],
            multi_objective_aggregation=aggregation,
        )
        trainer = grpo_trainer_class()(
            model=model,
            reward_funcs=[first_reward, second_reward],
            args=config,
            processing_class=tok,
            train_dataset=Dataset.from_list([{"prompt": "안녕하세요", "row": 0}]),
        )
        model.train()
        return trainer

    return build


def _advantages(trainer) -> list[float]:
    out = trainer._generate_and_score_completions([{"prompt": "안녕하세요", "row": 0}] * 4)
    return out["advantages"].tolist()


def test_sum_then_normalize_against_a_hand_computation(one_group_trainer):
    trainer = one_group_trainer("sum_then_normalize")
    # weighted sums 1, 0, 1.5, 1.5: mean 1, deviations 0, -1, .5, .5, sample std sqrt(1.5/3)
    std = math.sqrt(1.5 / 3)
    want = [d / (std + 1e-4) for d in (0.0, -1.0, 0.5, 0.5)]
    assert _advantages(trainer) == pytest.approx(want, abs=1e-5)
    assert trainer._metrics["train"]["groups/zero_spread"] == [0.0]


def test_normalize_then_sum_against_a_hand_computation(one_group_trainer):
    trainer = one_group_trainer("normalize_then_sum")
    # each reward normalised in the group (sample std), then weighted and summed:
    z1 = [d / (0.5 + 1e-4) for d in (0.75, -0.25, -0.25, -0.25)]  # mean .25, std .5
    z2 = [d / (math.sqrt(3) + 1e-4) for d in (-1.5, -1.5, 1.5, 1.5)]  # mean 1.5, std sqrt(3)
    total = [a + 0.5 * b for a, b in zip(z1, z2, strict=True)]
    mean = sum(total) / 4
    std = math.sqrt(sum((t - mean) ** 2 for t in total) / 3)
    want = [(t - mean) / (std + 1e-4) for t in total]  # then over the batch
    assert _advantages(trainer) == pytest.approx(want, abs=1e-5)
    # the rare reward (first) counts as much as the frequent one: the first completion leads
    assert max(range(4), key=lambda i: want[i]) == 0


def test_the_summary_skips_steps_a_reward_did_not_apply_to(tmp_path):
    from malpyeong.training.grpo import reward_summary

    history = [
        {"step": 1, "reward": 0.5, "rewards/correct/mean": 0.25, "rewards/quality/mean": None},
        {"step": 2, "reward": 0.5, "rewards/correct/mean": None, "rewards/quality/mean": 0.5},
        {"step": 3, "reward": 0.5, "rewards/correct/mean": 0.75, "rewards/quality/mean": float("nan")},
        {"step": 4, "reward": 0.5, "rewards/essay/mean": None, "groups/zero_spread": 1, "groups/total": 2},
    ]
    (tmp_path / "log_history.json").write_text(json.dumps(history), encoding="utf-8")
    assert reward_summary(tmp_path) == [
        "reward correct: 0.250 at step 1 -> 0.750 at step 3",
        "reward essay: applied to no completion",
        "reward quality: 0.500 at step 2 -> 0.500 at step 2",
        "groups with zero spread: 1.00 of 2.00 per generation batch on average",
    ]
