"""Preference-tune a backbone with ORPO on pairs from orpo/build_pairs.py.

    python orpo/train.py --config resource/configs/cci/tiny_orpo.yaml             # on a CPU
    python orpo/train.py --model rtzr/ko-gemma-2-9b-it --pairs pairs/cci.jsonl --method qlora \\
        --sft_adapter runs/cci/gemma --dev_file resource/data/cci_dev.json --beta 0.1

ORPO (trl.experimental.orpo) adds an odds-ratio penalty, weighted by ``beta``, to the chosen
response's NLL, so no reference model is needed. ``--sft_adapter`` continues training an SFT
run's LoRA adapter (start ORPO where SFT ended). The recipe holds our keys plus every trl
ORPOConfig field; ``--key value`` overrides it. The run folder has the same layout as SFT's
(adapter or model, config.yaml, dev_metrics.json with the held-out chosen-minus-rejected
log-probability margin before and after, malpyeong_run.json).
"""

from __future__ import annotations

import sys

from malpyeong.cli import run_cli
from malpyeong.training import has_flag, quiet_libraries


def main(argv: list[str] | None = None) -> int:
    if has_flag(argv, "--list-models"):
        from malpyeong.backbones import registry_table

        print(registry_table())
        return 0
    quiet_libraries()
    from malpyeong.training import orpo_parser, train_orpo

    parser = orpo_parser()
    parser.parser.description = __doc__
    script, model_args, config = parser.parse(argv)
    out = train_orpo(script, model_args, config)
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
