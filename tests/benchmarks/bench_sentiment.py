"""Benchmark of the headline sentiment scorer on Financial PhraseBank (a script, not a pytest test).

    .venv/bin/python tests/benchmarks/bench_sentiment.py [--file ../shared/data/news/Sentences_AllAgree.txt]

Financial PhraseBank v1.0 (Malo et al., CC BY-NC-SA 3.0) is not shipped with the project: the file is
read from ../shared/data/news (see its README.md). Reports the sign agreement of
``features.sentiment.score_many`` with the annotators on the sentences where all of them agreed:
on the positive and negative sentences (a zero score counts as wrong), per label, and the mean
absolute score of the neutral sentences against that of the polar ones. Figures are measured here,
never typed in. Exits non-zero when the agreement falls under --min-agreement or a label under
--min-per-label (not bought by always answering one sign).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from features.sentiment import score_many  # noqa: E402

DEFAULT_FILE = REPO.parent / "shared" / "data" / "news" / "Sentences_AllAgree.txt"


def read_phrasebank(path: Path) -> pd.DataFrame:
    """``sentence@label`` lines, latin-1."""
    rows = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if "@" in line:
            sentence, label = line.rsplit("@", 1)
            rows.append((sentence.strip(), label.strip()))
    return pd.DataFrame(rows, columns=["sentence", "label"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--min-agreement", type=float, default=0.70)
    ap.add_argument("--min-per-label", type=float, default=0.60)
    args = ap.parse_args()
    if not args.file.is_file():
        raise SystemExit(f"benchmark data not found: {args.file} (see ../shared/data/news/README.md)")

    bank = read_phrasebank(args.file)
    polar = bank[bank["label"].isin(["positive", "negative"])]
    started = time.perf_counter()
    scores = score_many(polar["sentence"])
    seconds = time.perf_counter() - started
    labels = polar["label"].to_numpy()
    expected = np.where(labels == "positive", 1.0, -1.0)
    agreement = float(np.mean(np.sign(scores) == expected))
    by_label = {label: float(np.mean(np.sign(scores[labels == label]) == sign))
                for label, sign in (("positive", 1.0), ("negative", -1.0))}
    neutral = score_many(bank.loc[bank["label"] == "neutral", "sentence"])
    polar_abs, neutral_abs = float(np.mean(np.abs(scores))), float(np.mean(np.abs(neutral)))

    print(f"Financial PhraseBank all-agree ({args.file.name}): {len(bank):,} sentences, {len(polar):,} polar "
          f"({(labels == 'positive').sum():,} positive, {(labels == 'negative').sum():,} negative), "
          f"{len(neutral):,} neutral")
    print(f"sign agreement on polar sentences: {agreement:.1%} "
          f"(positive {by_label['positive']:.1%}, negative {by_label['negative']:.1%}); "
          f"scored in {seconds:.2f} s ({len(polar) / seconds:,.0f} sentences/s)")
    print(f"mean |score|: polar {polar_abs:.3f}, neutral {neutral_abs:.3f}")
    ok = (agreement >= args.min_agreement and min(by_label.values()) >= args.min_per_label
          and neutral_abs < polar_abs)
    if not ok:
        print(f"FAILED: needs agreement >= {args.min_agreement:.0%}, every label >= {args.min_per_label:.0%} "
              "and neutral sentences scored weaker than polar ones")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
