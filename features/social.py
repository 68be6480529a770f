"""Social-media posts about stocks: cash-tags, a finance- and slang-aware scorer, daily aggregation.

The scorer is the news scorer's VADER with its finance overlay (``features.sentiment``) plus what
posts on StockTwits and Twitter say that news does not:

* trading slang ("calls", "puts", "bagholder", "tendies", "to the moon", "buy the dip", "short this",
  "going long", "pump and dump", ...), as whole phrases first so that "short squeeze" is not read as
  "short" and "short term" is not read at all;
* emoji with a market meaning (🚀 🌙 📈 📉 🐂 🐻 🩸 💎 ...), several of which VADER reads as neutral or
  the wrong way round ("fire" for 🔥 is negative in VADER's emoji descriptions);
* cash-tags, links and @mentions are removed before scoring: tickers such as $LOW, $WIN, $FIT or
  $GOOD would otherwise score as words.

Which lexicon does best was measured, not assumed: ``tests/benchmarks/bench_social_sentiment.py``
compares plain VADER, the news scorer, Loughran-McDonald and this scorer on posts their authors
tagged Bullish/Bearish and on Financial PhraseBank (figures in README.md, "Social sentiment").

``aggregate_social_daily`` maps posts to the trading day they can first affect (posts at or after the
16:00 New York close, or on a closed day, count for the next session) and sums per ticker and day:
the score, the number of posts and the bullish and bearish ones (an author's own Bullish/Bearish tag
where the source has one, else the sign of the score past ``DIRECTION_THRESHOLD``).

No Django imports here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import pandas as pd

from features.sentiment import FINANCE_LEXICON, FINANCE_NEUTRAL, _compose, _to_trading_day

__all__ = [
    "DIRECTION_THRESHOLD",
    "EMOJI_LEXICON",
    "SOCIAL_DAILY_COLUMNS",
    "SOCIAL_LEXICON",
    "aggregate_social_daily",
    "clean_post",
    "extract_cashtags",
    "post_directions",
    "score_post",
    "score_posts",
]

# VADER's usual cut for a polar compound score; a post between -0.05 and 0.05 is neutral.
DIRECTION_THRESHOLD = 0.05
SOCIAL_DAILY_COLUMNS = ["ticker", "date", "score_sum", "count", "bullish", "bearish"]

# Words of trading posts (valences on VADER's -4..+4 scale, like the finance overlay).
_SOCIAL_POSITIVE = {
    2.5: "moon mooning moonshot tothemoon xrocketx squeezing shortsqueeze breakout breakingout buythedip "
    "alltimehigh alltimehighs",
    2.0: "rocket rocketing ripping flying uptrend undervalued tendies lambo xgoinglongx gapup newhighs "
    "bull bulls xdiamondhandsx",
    1.5: "calls buy buying bought loading loaded accumulate accumulating adding hodl squeeze green "
    "oversold cheap",
}
_SOCIAL_NEGATIVE = {
    -2.5: "bagholder bagholders bagholding xbagholderx pumpanddump rekt bloodbath xshortingx",
    -2.0: "puts sell selling dump dumping dumped tank tanking tanked bleed bleeding downtrend overvalued "
    "gapdown garbage trash breakdown xpaperhandsx bear bears",
    -1.5: "sold overbought red pumpers dilution offering xprofittakingx",
}
SOCIAL_LEXICON: dict[str, float] = {
    word: valence for table in (_SOCIAL_POSITIVE, _SOCIAL_NEGATIVE) for valence, words in table.items()
    for word in words.split()
}

# Emoji -> (token, valence). Emoji not listed keep VADER's own reading of their description.
EMOJI_LEXICON: dict[str, tuple[str, float]] = {
    "\U0001f680": ("xrocketx", 2.5),  # 🚀
    "\U0001f319": ("xmoonx", 2.0),  # 🌙
    "\U0001f315": ("xmoonx", 2.0),  # 🌕
    "\U0001f4c8": ("xchartupx", 2.0),  # 📈
    "\U0001f4c9": ("xchartdownx", -2.0),  # 📉
    "\U0001f402": ("xbullx", 2.0),  # 🐂
    "\U0001f403": ("xbullx", 2.0),  # 🐃
    "\U0001f43b": ("xbearx", -2.0),  # 🐻
    "\U0001f48e": ("xgemx", 1.5),  # 💎
    "\U0001f525": ("xfirex", 1.5),  # 🔥
    "\U0001f911": ("xmoneyfacex", 1.5),  # 🤑
    "\U0001f4b0": ("xmoneybagx", 1.5),  # 💰
    "\U0001f4b5": ("xmoneybagx", 1.5),  # 💵
    "\U0001f7e2": ("xgreenx", 1.0),  # 🟢
    "\U0001f534": ("xredx", -1.0),  # 🔴
    "\U0001fa78": ("xbloodx", -2.0),  # 🩸
    "\U0001f4a9": ("xpoox", -2.0),  # 💩
    "\U0001f921": ("xclownx", -1.5),  # 🤡
    "\U0001f9fb": ("xpaperx", -1.0),  # 🧻 (paper hands)
    "\U0001faa6": ("xgravex", -2.0),  # 🪦
    "\u26b0": ("xgravex", -2.0),  # ⚰
    "\U0001f480": ("xskullx", -1.5),  # 💀
    "\U0001f5d1": ("xtrashx", -1.5),  # 🗑
    "\U0001f3a2": ("xcoasterx", -0.5),  # 🎢
}
_EMOJI_VALENCE = {token: valence for token, valence in EMOJI_LEXICON.values()}
_EMOJI_RE = re.compile("|".join(re.escape(e) for e in sorted(EMOJI_LEXICON, key=len, reverse=True)))

# Phrases -> one token (checked in this order, case-insensitive) before the words are looked up.
_PHRASES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), t) for p, t in [
        (r"\bshort[\s-]+squeez\w*", " shortsqueeze "),
        (r"\bshort[\s-]+(?:term|terms|list|sellers?|interest|ratio|float)\b", " shortterm "),
        (r"\bto\s+the\s+moon\b", " tothemoon "),
        (r"\bbuy(?:ing)?\s+(?:the|this|these)\s+dips?\b|\bbtfd\b", " buythedip "),
        (r"\ball[\s-]+time[\s-]+highs?\b|\bath\b", " alltimehigh "),
        (r"\bnew\s+highs?\b", " newhighs "),
        (r"\btak(?:e|es|ing|en)\s+(?:some\s+)?profits?\b|\bprofit[\s-]+taking\b", " xprofittakingx "),
        (r"\bgap(?:ping|ped)?\s+up\b", " gapup "),
        (r"\bgap(?:ping|ped)?\s+down\b", " gapdown "),
        (r"\bbreak(?:ing|s)?\s+out\b", " breakingout "),
        (r"\bpump\s*(?:and|&|n)\s*dump\b", " pumpanddump "),
        (r"\bbag\s*hold(?:er|ers|ing)\b|\bholding\s+the\s+bags?\b", " xbagholderx "),
        (r"\bdiamond\s+hands?\b", " xdiamondhandsx "),
        (r"\bpaper\s+hands?\b", " xpaperhandsx "),
        # "long" and "short" are ordinary words ("long time", "short of"): only their trading uses count
        (r"\b(?:go|going|went|gone|stay|staying|still|get|got|getting|am|i'm|im|be|been|added|adding)\s+long\b"
         r"|\blong\s+(?:here|now|term\s+hold|and\s+strong|calls)\b|\blong\s+(?=\$[a-z])", " xgoinglongx "),
        (r"\bshort(?:ing|ed)\b|\bshort\s+(?:it|this|here|now|more|position|positions)\b"
         r"|\b(?:go|going|went|stay|staying|still|get|got|getting|am|i'm|im|be|been|added|adding)\s+short\b"
         r"|\bshort\s+(?=\$[a-z])", " xshortingx "),
    ]
]
_URL_RE = re.compile(r"https?://\S*|www\.\S+", re.IGNORECASE)
_MENTION_RE = re.compile(r"(?<![\w@])@\w+")
_RT_RE = re.compile(r"^\s*RT\s+@\w+:?\s*", re.IGNORECASE)
# $AAPL, $BRK.B, $BTC.X (StockTwits' crypto), not $100 or US$5: a letter first, not after a word.
_CASHTAG_RE = re.compile(r"(?<![\w$])\$([A-Za-z][A-Za-z0-9]{0,5}(?:[.\-][A-Za-z]{1,2})?)(?![\w])")


def extract_cashtags(text: str | None) -> list[str]:
    """Upper-case tickers cash-tagged in ``text`` ("$aapl and $MSFT" -> ["AAPL", "MSFT"]), each once,
    in order of appearance."""
    if not text or not isinstance(text, str):
        return []
    return list(dict.fromkeys(m.upper() for m in _CASHTAG_RE.findall(html.unescape(text))))


def clean_post(text: str) -> str:
    """The text VADER reads: HTML entities decoded, retweet prefix, links, mentions and cash-tags
    removed, trading phrases and market emoji replaced by lexicon tokens."""
    out = html.unescape(text)
    out = _RT_RE.sub("", out)
    out = _URL_RE.sub(" ", out)
    out = _MENTION_RE.sub(" ", out)
    for pattern, token in _PHRASES:  # before cash-tags go: "short $AAPL" is a phrase
        out = pattern.sub(token, out)
    out = _CASHTAG_RE.sub(" ", out)
    out = _EMOJI_RE.sub(lambda m: f" {EMOJI_LEXICON[m.group(0)][0]} ", out)
    return " ".join(out.split())


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    for word in FINANCE_NEUTRAL:
        analyzer.lexicon.pop(word, None)
    analyzer.lexicon.update(FINANCE_LEXICON)
    analyzer.lexicon.update(SOCIAL_LEXICON)
    analyzer.lexicon.update(_EMOJI_VALENCE)
    return analyzer


def score_post(text: str | None) -> float:
    """Sentiment of one post in [-1, 1] (0.0 for empty or missing text)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return 0.0
    text = str(text).strip()
    if not text:
        return 0.0
    cleaned = clean_post(text)
    if not cleaned:
        return 0.0
    compound = _analyzer().polarity_scores(_compose(cleaned))["compound"]
    return float(max(-1.0, min(1.0, compound)))


def score_posts(texts: Iterable[str | None]) -> np.ndarray:
    """Vectorised ``score_post``: a float64 array, one score per text."""
    return np.fromiter((score_post(t) for t in texts), dtype=np.float64)


def post_directions(scores: np.ndarray, labels: Iterable[str | None] | None = None) -> np.ndarray:
    """+1 bullish, -1 bearish, 0 neutral per post: the author's own tag ("bullish"/"bearish", any case)
    where there is one, else the sign of the score past ``DIRECTION_THRESHOLD``."""
    scores = np.asarray(scores, dtype=np.float64)
    out = np.where(scores >= DIRECTION_THRESHOLD, 1, np.where(scores <= -DIRECTION_THRESHOLD, -1, 0)).astype(np.int8)
    if labels is not None:
        tags = pd.Series(list(labels), dtype=object).fillna("").astype(str).str.strip().str.lower().to_numpy()
        out = np.where(tags == "bullish", 1, np.where(tags == "bearish", -1, out)).astype(np.int8)
    return out


def _empty_daily() -> pd.DataFrame:
    return pd.DataFrame({
        "ticker": pd.Series(dtype=object), "date": pd.Series(dtype="datetime64[ns]"),
        "score_sum": pd.Series(dtype="float64"), "count": pd.Series(dtype="int64"),
        "bullish": pd.Series(dtype="int64"), "bearish": pd.Series(dtype="int64"),
    })


def aggregate_social_daily(posts: pd.DataFrame | None, *, holidays: Iterable | None = None) -> pd.DataFrame:
    """Per ticker and trading day: ``ticker, date, score_sum, count, bullish, bearish``.

    ``posts`` has ``ticker``, ``posted_at`` (timezone-aware, or naive New York time), ``score`` and
    optionally ``direction`` (+1/-1/0; computed from ``score`` and an optional ``label`` column when
    absent). ``date`` (datetime64, midnight) is the trading day a post can first affect: posts at or
    after the 16:00 New York close, on a weekend or on a ``holidays`` date count for the next session.
    Rows without a time or score are dropped. Sorted by ticker and date.
    """
    if posts is None or posts.empty:
        return _empty_daily()
    scores = pd.to_numeric(posts["score"], errors="coerce").to_numpy(dtype=np.float64)
    if "direction" in posts:
        direction = pd.to_numeric(posts["direction"], errors="coerce").fillna(0).to_numpy(dtype=np.int8)
    else:
        direction = post_directions(np.nan_to_num(scores), posts["label"] if "label" in posts else None)
    times = pd.to_datetime(posts["posted_at"], utc=False).reset_index(drop=True)
    frame = pd.DataFrame({"ticker": posts["ticker"].astype(str).str.upper().to_numpy(), "ts": times,
                          "score": scores, "bullish": (direction > 0).astype(np.int64),
                          "bearish": (direction < 0).astype(np.int64)})
    frame = frame.dropna(subset=["ts", "score"])
    if frame.empty:
        return _empty_daily()
    frame["date"] = _to_trading_day(frame["ts"], holidays).astype("datetime64[ns]")
    out = (
        frame.groupby(["ticker", "date"], sort=True)
        .agg(score_sum=("score", "sum"), count=("score", "size"), bullish=("bullish", "sum"),
             bearish=("bearish", "sum"))
        .reset_index()
    )
    for col in ("count", "bullish", "bearish"):
        out[col] = out[col].astype("int64")
    return out[SOCIAL_DAILY_COLUMNS]
