"""Finance-aware sentiment scores for headlines and news sentences.

The scorer is VADER (``vaderSentiment`` 3.3.2, MIT, its lexicon ships inside the wheel: nothing is
downloaded at run time) with two finance-specific additions of our own:

* a word-list overlay (``FINANCE_LEXICON``) for the direction words that carry the sentiment of
  financial news ("rose", "fell", "beat", "downgrade", "layoffs", ...) and which VADER, a
  social-media lexicon, scores as neutral or the wrong way ("profit" is only mildly positive on its
  own: "profit fell" must read negative);
* a composition rule for "bad" nouns (loss, costs, debt, ...): a fall in a bad thing is good news
  ("net loss narrowed", "cut costs") and a rise in it is bad news ("losses widened").

``score_text`` returns VADER's compound score in [-1, 1]; ``aggregate_daily`` turns scored
headlines into one mean score per ticker and trading day (headlines after the 16:00 New York close
count for the next trading day).

No Django imports here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
import pandas as pd

__all__ = [
    "FINANCE_LEXICON",
    "FINANCE_NEUTRAL",
    "aggregate_daily",
    "next_trading_day",
    "score_many",
    "score_text",
]

# VADER valences run from -4 to +4; most finance words sit at +-1.5..2.5.
_POSITIVE = {
    2.2: "beat beats beating outperform outperforms outperformed outperforming upgrade upgrades upgraded "
    "surge surges surged surging soar soars soared soaring jump jumps jumped jumping skyrocketed "
    "record-high bullish rally rallies rallied rebound rebounds rebounded exceeded exceeds exceed "
    "double doubled doubles doubling tripled profitable profitability",
    1.8: "rise rises rose risen rising increase increases increased increasing grow grows grew grown "
    "growing growth gain gains gained gaining climb climbs climbed climbing improve improves improved "
    "improving improvement higher highest expand expands expanded expanding expansion boost boosts "
    "boosted boosting advance advances advanced advancing upbeat robust strengthen strengthened "
    "strengthening stronger recovery recovered recovers up-beat topped tops raise raises raised "
    "raising accelerate accelerated accelerating outpaced upside won wins",
    1.2: "up upward upwards increase record contract-win awarded order orders signed agreement "
    "acquire acquires acquired dividend dividends buyback buybacks repurchase",
    0.6: "profit profits earnings revenue revenues sales margin margins",
}
_NEGATIVE = {
    -2.4: "downgrade downgrades downgraded plunge plunges plunged plunging slump slumps slumped slumping "
    "tumble tumbles tumbled tumbling crash crashed collapse collapsed collapses bankruptcy bankrupt "
    "insolvency default defaulted defaults layoffs layoff lay-offs redundancies fraud scandal "
    "underperform underperforms underperformed bearish plummet plummeted plummets",
    -1.8: "fall falls fell fallen falling decline declines declined declining decrease decreases "
    "decreased decreasing drop drops dropped dropping lower lowered lowering lowest loss losses "
    "lost losing miss misses missed weaker weaken weakened weakening shrink shrinks shrank shrunk "
    "shrinking slide slides slid sliding sink sinks sank sinking slip slips slipped slipping "
    "slowdown slowed slowing downturn deficit impairment writedown write-down writedowns warned "
    "warns warning deteriorated deteriorating worsened worsening halved dip dips dipped downside "
    "fined penalty penalties recall recalls probe lawsuit sued cuts cut cutting negative",
    -1.2: "down downward downwards below delay delayed delays charges charge",
}
FINANCE_LEXICON: dict[str, float] = {
    word: valence for table in (_POSITIVE, _NEGATIVE) for valence, words in table.items() for word in words.split()
}

# Words VADER scores as sentiment that are neutral finance jargon ("share", "interest", "credit",
# "security", "crude" oil, "United" Airlines): removed from the lexicon.
FINANCE_NEUTRAL = frozenset(
    "share shares interest interests credit credits security securities trust trusts united value "
    "values worth asset assets demand pay crude".split()
)

# Composition: a fall in a bad thing is good, a rise in it is bad.
_BAD_NOUNS = {
    "loss", "losses", "deficit", "costs", "cost", "expenses", "debt", "debts", "unemployment",
    "impairment", "impairments", "writedowns", "charges", "provisions", "liabilities", "layoffs",
    "redundancies", "risk", "risks",
}
_DOWN_WORDS = {
    "decrease", "decreases", "decreased", "decreasing", "decline", "declines", "declined", "declining",
    "fall", "falls", "fell", "fallen", "falling", "narrow", "narrows", "narrowed", "narrowing",
    "reduce", "reduces", "reduced", "reducing", "reduction", "cut", "cuts", "cutting", "lower", "lowered",
    "shrank", "shrink", "shrinks", "shrunk", "drop", "drops", "dropped", "down", "eliminate", "eliminated",
    "halved", "trimmed", "slashed", "smaller", "less",
}
_UP_WORDS = {
    "increase", "increases", "increased", "increasing", "rise", "rises", "rose", "risen", "rising",
    "widen", "widens", "widened", "widening", "grow", "grows", "grew", "grown", "growing", "higher",
    "up", "jump", "jumped", "surge", "surged", "swelled", "doubled", "bigger", "deepened", "larger",
}
_WINDOW = 4
_GOOD_TOKEN = "improved"
_BAD_TOKEN = "worsened"
_NEUTRAL_TOKEN = "it"
_TOKEN_RE = re.compile(r"\s+")
_STRIP = ".,;:!?()\"'"


@lru_cache(maxsize=1)
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    for word in FINANCE_NEUTRAL:
        analyzer.lexicon.pop(word, None)
    analyzer.lexicon.update(FINANCE_LEXICON)
    return analyzer


def _compose(text: str) -> str:
    """Rewrite "<bad noun> ... <down word>" to a positive token pair (and up-words to negative)."""
    tokens = _TOKEN_RE.split(text.strip())
    words = [t.strip(_STRIP).lower() for t in tokens]
    for i, word in enumerate(words):
        if word not in _BAD_NOUNS:
            continue
        # "from a loss" / "turned a loss into" is a turnaround: keep the noun out of the score.
        if any(w in {"from", "turned", "swung"} for w in words[max(0, i - 3) : i]):
            tokens[i] = _NEUTRAL_TOKEN
            continue
        lo, hi = max(0, i - _WINDOW), min(len(words), i + _WINDOW + 1)
        for j in range(lo, hi):
            if j == i:
                continue
            if words[j] in _DOWN_WORDS:
                tokens[i], tokens[j] = _NEUTRAL_TOKEN, _GOOD_TOKEN
                break
            if words[j] in _UP_WORDS:
                tokens[i], tokens[j] = _NEUTRAL_TOKEN, _BAD_TOKEN
                break
    return " ".join(tokens)


def score_text(text: str | None) -> float:
    """Sentiment of one text in [-1, 1] (0.0 for empty or missing text)."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return 0.0
    text = str(text).strip()
    if not text:
        return 0.0
    # Reuters "BRIEF-" / "UPDATE 2-" prefixes carry no sentiment.
    text = re.sub(r"^(?:BRIEF|UPDATE\s*\d*|CORRECTED|RPT|REFILE)\s*[-:]\s*", "", text, flags=re.IGNORECASE)
    compound = _analyzer().polarity_scores(_compose(text))["compound"]
    return float(max(-1.0, min(1.0, compound)))


def score_many(texts: Iterable[str | None]) -> np.ndarray:
    """Vectorised ``score_text``: a float64 array, one score per text."""
    return np.fromiter((score_text(t) for t in texts), dtype=np.float64)


# ---------------------------------------------------------------------------------------------------
# Daily aggregation
# ---------------------------------------------------------------------------------------------------
MARKET_TZ = "America/New_York"
MARKET_CLOSE_HOUR = 16


def next_trading_day(day: pd.Timestamp | np.datetime64, holidays: Iterable | None = None) -> pd.Timestamp:
    """The first weekday after ``day`` that is not in ``holidays``."""
    bday = pd.offsets.CustomBusinessDay(holidays=list(holidays or []))
    return (pd.Timestamp(day).normalize() + bday).normalize()


def _to_trading_day(ts: pd.Series, holidays: Iterable | None) -> pd.Series:
    """Map timestamps to the trading day they can first affect.

    Date-only values (midnight, no timezone) stay on their day. Timestamps with a time of day are read
    in New York time (naive ones are taken to be New York already); at or after 16:00, or on a
    weekend/holiday, they move to the next trading day.
    """
    holidays = list(holidays or [])
    if ts.dt.tz is not None:
        local = ts.dt.tz_convert(MARKET_TZ).dt.tz_localize(None)
    else:
        local = ts
    day = local.dt.normalize()
    has_time = (local - day) != pd.Timedelta(0)
    after_close = has_time & (local.dt.hour >= MARKET_CLOSE_HOUR)
    holiday_set = {pd.Timestamp(h).normalize() for h in holidays}
    closed = has_time & ((day.dt.dayofweek >= 5) | day.isin(holiday_set))
    move = after_close | closed
    out = day.copy()
    if move.any():
        bday = pd.offsets.CustomBusinessDay(holidays=list(holiday_set))
        # rollforward for weekend/holiday stamps, +1 trading day for after-close stamps on a trading day.
        moved = day[move].map(lambda d: bday.rollforward(d) if not bday.is_on_offset(d) else d + bday)
        out[move] = moved
    return out


def _parse_times(values: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    text = values.astype("string").str.strip()
    # Alpha Vantage NEWS_SENTIMENT "20240101T120000", Reuters file_day "20110706".
    compact = text.str.fullmatch(r"\d{8}T\d{4,6}")
    if compact.fillna(False).all():
        return pd.to_datetime(text, format="%Y%m%dT%H%M%S", errors="coerce")
    with_offset = text.str.contains(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:Z|UTC|[+-]\d{2}:?\d{2})$", regex=True)
    if with_offset.fillna(False).any():  # ISO stamps with offsets: compare them in UTC
        return pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
    return pd.to_datetime(text, errors="coerce", format="mixed")


def aggregate_daily(
    news_df: pd.DataFrame,
    *,
    text_col: str | None = None,
    time_col: str | None = None,
    ticker_col: str = "ticker",
    holidays: Iterable | None = None,
) -> pd.DataFrame:
    """Mean sentiment per ticker and trading day.

    ``news_df`` needs a ticker column, a time column (``time_published``, ``published_at``,
    ``datetime`` or ``date``) and either a ``score`` column or a text column (``headline`` or
    ``title``) to score. Returns columns ``ticker, date, score, count`` sorted by ticker and date,
    ``date`` as datetime64 (midnight). Rows with no parseable time are dropped.
    """
    columns = ["ticker", "date", "score", "count"]
    if news_df is None or news_df.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(columns, ["object", "datetime64[ns]", "float64", "int64"], strict=True)})
    if time_col is None:
        time_col = next((c for c in ("time_published", "published_at", "datetime", "timestamp", "date") if c in news_df), None)
        if time_col is None:
            raise ValueError("news_df needs a time column (time_published, published_at, datetime or date)")
    if "score" in news_df and text_col is None:
        scores = pd.to_numeric(news_df["score"], errors="coerce").to_numpy(dtype=float)
    else:
        if text_col is None:
            text_col = next((c for c in ("headline", "title", "text") if c in news_df), None)
            if text_col is None:
                raise ValueError("news_df needs a score column or a headline/title/text column")
        scores = score_many(news_df[text_col].tolist())
    times = _parse_times(news_df[time_col]).reset_index(drop=True)  # keeps a timezone if there is one
    frame = pd.DataFrame({"ticker": news_df[ticker_col].astype(str).str.upper().to_numpy(), "ts": times,
                          "score": scores})
    frame = frame.dropna(subset=["ts", "score"])
    if frame.empty:
        return aggregate_daily(None)
    frame["date"] = _to_trading_day(frame["ts"], holidays).astype("datetime64[ns]")
    out = (
        frame.groupby(["ticker", "date"], sort=True)["score"]
        .agg(score="mean", count="size")
        .reset_index()
    )
    out["count"] = out["count"].astype("int64")
    return out[columns]
