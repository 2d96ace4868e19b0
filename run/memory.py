"""Print the memory state of one dialogue, or update a previous state with new turns.

    python run/memory.py --model runs/memory/qwen_lora --dialogue chat.txt
    cat chat.txt | python run/memory.py --model Qwen/Qwen2.5-3B-Instruct --dialogue -
    python run/memory.py --model runs/memory/qwen_lora --dialogue new_turns.txt \\
        --state state.json > state2.json                          # inside a chat loop
    python run/memory.py --model someone/published-memory-lora --dialogue chat.txt \\
        --system_prompt_file their_prompt.txt --no_constrain      # a published model as it is

The dialogue is one utterance per line, ``Speaker: utterance`` (blank lines are skipped). The
output is the memory JSON: {"memory_state": {"key_facts", "unresolved_refs", "topic",
"turn_count"}, "memory_summary"}. turn_count is the number of utterances in the dialogue (with
--state: the previous count plus the new utterances); --turn_count speaker_turns counts speaker
turns instead (consecutive utterances of one speaker count once). Whatever the model writes,
the delivered turn_count is that exact count.

Decoding follows the task's JSON schema (llguidance) unless --no_constrain is given; the raw
text is then repaired when it can be (code fences, text around the object, trailing commas),
and when nothing can be read the previous state (or an empty one) is delivered, with a note on
stderr. --model is a hub id, a local model, a LoRA adapter or a training run folder.
"""

from __future__ import annotations

import argparse
import json
import sys

from malpyeong.cli import read_system_prompt, run_cli, verbose_argument
from malpyeong.errors import UserError, UserErrors
from malpyeong.inference.engines import GenerationSettings
from malpyeong.inference.predict import PredictionJob
from malpyeong.io import atomic_write_text, check_outputs, json_loads, read_text, text_of
from malpyeong.tasks.memory import TURN_READINGS, MemoryItem, MemoryTask, state_problems


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="hub id, model folder, adapter or run folder")
    p.add_argument(
        "--dialogue", required=True, help="a text file of 'Speaker: utterance' lines, or - for stdin"
    )
    p.add_argument(
        "--state", default=None, help="the previous memory JSON: the dialogue then holds only the new turns"
    )
    p.add_argument(
        "--turn_count",
        choices=TURN_READINGS,
        default="utterances",
        help="utterances (default): turn_count = number of utterances; "
        "speaker_turns: consecutive utterances of one speaker count once",
    )
    p.add_argument(
        "--prompt",
        default=None,
        help="prompt variant: baseline or ko (Korean instructions); default: the run's",
    )
    p.add_argument(
        "--system_prompt_file",
        default=None,
        help="replace the system prompt with this file's text (a published model's exact prompt)",
    )
    p.add_argument(
        "--no_constrain",
        action="store_true",
        help="decode freely (see the raw model), not under the JSON schema",
    )
    p.add_argument("--max_new_tokens", type=int, default=1024)
    p.add_argument(
        "--max_length",
        type=int,
        default=None,
        help="token budget of prompt + answer; the oldest utterances are cut to fit "
        "(default: the run's, or the model's context size)",
    )
    p.add_argument("--show_raw", action="store_true", help="also print the raw generation to stderr")
    p.add_argument("--out", default=None, help="write the JSON to this file instead of stdout")
    p.add_argument("--overwrite", action="store_true", help="with --out: replace the file")
    p.add_argument("--dtype", default="auto", help="auto, bf16, fp16 or fp32")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--engine", default="hf", choices=("hf", "vllm"))
    p.add_argument("--seed", type=int, default=0)
    verbose_argument(p)
    return p.parse_args(argv)


def read_dialogue(name: str) -> list[dict]:
    """``Speaker: utterance`` lines as conversation entries; every bad line reported."""
    if name == "-":
        text = text_of(sys.stdin.buffer.read(), "stdin", field="dialogue")
    else:
        text = read_text(name, field="dialogue")
    turns, errors = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        speaker, sep, utterance = line.partition(":")
        if not sep or not speaker.strip() or not utterance.strip():
            errors.append(
                UserError(
                    "not a 'Speaker: utterance' line", file=name, item=f"line {number}", field="dialogue"
                )
            )
            continue
        turns.append({"speaker": speaker.strip(), "utterance": utterance.strip()})
    if errors:
        raise UserErrors(errors[:20])
    if not turns:
        raise UserError("no utterances", file=name, field="dialogue")
    return turns


def read_state(name: str) -> dict:
    text = read_text(name, field="state")
    try:
        state = json_loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as err:
        raise UserError(
            f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})", file=name, field="state"
        ) from None
    except ValueError as err:  # NaN / Infinity
        raise UserError(f"not valid JSON: {err}", file=name, field="state") from None
    problems = state_problems(state, "state")
    if problems:
        raise UserErrors([UserError(p, file=name, field=f) for f, p in problems])
    return state


def build_item(task: MemoryTask, turns: list[dict], state: dict | None, reading: str) -> MemoryItem:
    inp: dict = {"conversation": turns, "turn_count_by": reading}
    if state is not None:
        inp["previous_state"] = state
    problems: list[tuple[str, str]] = []
    item = task.parse_item({"id": "dialogue", "input": inp, "output": ""}, problems)
    if item is None:
        raise UserErrors([UserError(p, field=f) for f, p in problems])
    return item


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.overwrite and not args.out:
        raise UserError(
            "--overwrite replaces --out, and no --out is given",
            field="overwrite",
            hint="the JSON goes to stdout without --out",
        )
    check_outputs(  # before any work: no input is replaced, the output can be written
        [("--out", args.out)],
        [
            ("--dialogue", None if args.dialogue == "-" else args.dialogue),
            ("--state", args.state),
            ("--system_prompt_file", args.system_prompt_file),
        ],
        overwrite=args.overwrite,
    )
    if args.max_length is not None and args.max_length < 1:
        raise UserError(f"must be at least 1, got {args.max_length}", field="max_length")
    generation = GenerationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed)
    task = MemoryTask()
    job = PredictionJob(
        task,
        args.model,
        prompt=args.prompt,
        system_prompt=read_system_prompt(args.system_prompt_file),
        max_length=args.max_length,
        batch_size=1,
        generation=generation,
        constrain=not args.no_constrain,
        engine=args.engine,
        dtype=args.dtype,
        device=args.device,
        progress=False,
    )
    job.settings_for(job.source_of(args.model))  # a bad --model or --prompt: before reading input
    state = read_state(args.state) if args.state else None
    item = build_item(task, read_dialogue(args.dialogue), state, args.turn_count)
    run = job.answer([item])
    answer = run.answers[0]
    if args.show_raw:
        print(f"raw generation: {answer.sidecar['text']}", file=sys.stderr)
    if run.unusable:
        print(
            "note: no memory state could be read from the generation (raise --max_new_tokens?"
            f"); delivered the {'previous' if state else 'empty'} state with the exact "
            "turn_count",
            file=sys.stderr,
        )
    if run.cut:
        print(f"note: {answer.sidecar['dropped']} older utterance(s) cut to fit max_length", file=sys.stderr)
    text = json.dumps(answer.output, ensure_ascii=False, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
