"""The baseline of bench_dedup.py: near-duplicate removal with the ``simhash`` package, written
the way its README shows, end to end on a JSONL of ``{"text": ...}`` records.

    python benchmarks/dedup_simhash_baseline.py IN.jsonl OUT.jsonl [--k 3]

Reads every line with ``json``, takes the same features our fingerprints hash
(``char5_features``: character 5-grams of the normalised text), builds
``SimhashIndex([(id, Simhash(features)), ...], k)`` and asks ``get_near_dups`` for every text;
a text is kept unless a near duplicate before it was kept (first wins), and the kept lines are
written out. Prints the counts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from simhash import Simhash, SimhashIndex

from malpyeong.prep.simhash import char5_features


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    logging.getLogger("simhash").setLevel(logging.ERROR)  # it logs every 10,000 adds

    with open(args.inp, encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip()]
    hashes = [Simhash(char5_features(json.loads(ln)["text"])) for ln in lines]
    index = SimhashIndex([(str(i), h) for i, h in enumerate(hashes)], k=args.k)
    kept_ids: set[int] = set()
    with open(args.out, "w", encoding="utf-8") as out:
        for i, (line, h) in enumerate(zip(lines, hashes, strict=True)):
            if any(int(j) in kept_ids for j in index.get_near_dups(h) if int(j) < i):
                continue
            kept_ids.add(i)
            out.write(line)
    kept = len(kept_ids)
    print(f"{len(lines)} in -> {kept} kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
