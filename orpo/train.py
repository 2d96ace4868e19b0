"""Preference-tune a backbone on pairs from orpo/build_pairs.py: ORPO, DPO, SimPO or KTO.

    python orpo/train.py --config resource/configs/cci/tiny_orpo.yaml             # on a CPU
    python orpo/train.py --config resource/configs/cci/tiny_dpo.yaml              # DPO, SimPO, KTO
    python orpo/train.py --model rtzr/ko-gemma-2-9b-it --pairs pairs/cci.jsonl --method qlora \\
        --sft_adapter runs/cci/gemma --dev_file resource/data/cci_dev.json --algorithm dpo

``--algorithm`` (or the recipe's ``algorithm:``) chooses the objective and so trl's trainer and
config: orpo (trl.experimental.orpo; an odds-ratio penalty, weighted by ``beta``, on the chosen
response's NLL, no reference model), dpo (trl.DPOTrainer; the reference is a frozen copy of the
starting weights, or log-probs computed once with ``--precompute_ref_log_probs true``), simpo
(trl.experimental.cpo with ``loss_type: simpo``, ``cpo_alpha: 0``) or kto (trl.KTOTrainer on
unpaired desirable / undesirable answers: the pairs unpaired, or ``--unpaired FILE`` from
orpo/build_unpaired.py). ``--sft_adapter`` continues training an SFT run's LoRA adapter;
``--init_from RUN`` starts from an earlier run's weights (staged training). The recipe holds our
keys plus every field of the objective's trl config; ``--key value`` overrides it. The run
folder has the same layout as SFT's (adapter or model, config.yaml, dev_metrics.json with the
held-out chosen-minus-rejected log-probability margin before and after, malpyeong_run.json).
Ctrl-C, then the same command with --resume, continues from the last complete checkpoint.
--help-all also lists every trainer field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from malpyeong.cli import run_cli
from malpyeong.models.runfolder import DEV_METRICS
from malpyeong.training import INTERRUPTED, has_flag


def main(argv: list[str] | None = None) -> int:
    if has_flag(argv, "--list-models"):
        from malpyeong.models.backbones import registry_table

        print(registry_table())
        return 0
    from malpyeong.training import algorithm_of, dev_summary, preference_parser, train_orpo

    args = sys.argv[1:] if argv is None else argv
    parser = preference_parser(algorithm_of(args))
    parser.description = parser.parser.description = __doc__
    script, model_args, config = parser.parse(args)
    out = train_orpo(script, model_args, config)
    margin = _heldout_margin(out)
    if margin:
        print(
            f"held-out chosen - rejected margin ({margin['pairs']} pairs): "
            f"{margin['before']:.3f} before, {margin['after']:.3f} after"
        )
    print(f"run folder: {out}")
    summary = dev_summary(out)
    if summary:
        print(summary)
    return 0


def _heldout_margin(out: Path) -> dict | None:
    path = out / DEV_METRICS
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("heldout_margin")


if __name__ == "__main__":
    sys.exit(run_cli(main, interrupted=INTERRUPTED))
