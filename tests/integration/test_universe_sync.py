"""sync_universe: symbol directories into Ticker, delisted tickers inactive (bars kept), download over HTTP."""

from __future__ import annotations

import gzip
import io
import json
from datetime import date

import pytest
from django.core.management import CommandError, call_command

from features.models import IngestionRun, PriceBar, Ticker
from features.providers import reset_limiters
from monitoring.models import CostRecord
from tests.fakes.provider_server import FakeProviderServer

pytestmark = pytest.mark.django_db

NASDAQ_HEADER = "Symbol|Security Name|Market Category|Test Issue|Financial Status|Round Lot Size|ETF|NextShares"
OTHER_HEADER = "ACT Symbol|Security Name|Exchange|CQS Symbol|ETF|Round Lot Size|Test Issue|NASDAQ Symbol"
TRAILER = "File Creation Time: 0628202421:32|||||||"

NASDAQ_ROWS = [
    "AAPL|Apple Inc. - Common Stock|Q|N|N|100|N|N",
    "MSFT|Microsoft Corporation - Common Stock|Q|N|N|100|N|N",
    "QQQ|Invesco QQQ Trust, Series 1|G|N|N|100|Y|N",
    "ZXZZT|NASDAQ TEST STOCK|G|Y|N|100|N|N",
]
OTHER_ROWS = [
    "IBM|International Business Machines Corporation Common Stock|N|IBM|N|100|N|IBM",
    "KO|Coca-Cola Company (The) Common Stock|N|KO|N|100|N|KO",
    "OLDCO|Old Company Common Stock|N|OLDCO|N|100|N|OLDCO",
    "IMO|Imperial Oil Limited Common Stock|A|IMO|N|100|N|IMO",
    "SPY|SPDR S&P 500 ETF Trust|P|SPY|Y|100|N|SPY",
]


def directory(header: str, rows: list[str]) -> str:
    return "\n".join([header, *rows, TRAILER]) + "\n"


def write(tmp_path, nasdaq_rows=NASDAQ_ROWS, other_rows=OTHER_ROWS):
    nasdaq, other = tmp_path / "nasdaqlisted.txt", tmp_path / "otherlisted.txt.gz"
    nasdaq.write_text(directory(NASDAQ_HEADER, nasdaq_rows))
    other.write_bytes(gzip.compress(directory(OTHER_HEADER, other_rows).encode()))
    return nasdaq, other


def sync(*args) -> dict:
    out = io.StringIO()
    call_command("sync_universe", *map(str, args), "--json", stdout=out, stderr=io.StringIO())
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_sync_adds_updates_and_marks_dropped_tickers_inactive_keeping_bars(tmp_path):
    # A ticker loaded from a price file before any sync: no exchange, with bars.
    legacy = Ticker.objects.create(symbol="GONE")
    PriceBar.objects.create(ticker=legacy, date=date(2018, 5, 18), open=1, high=1, low=1, close=1, adj_close=1,
                            volume=1)
    Ticker.objects.create(symbol="AAPL", name="old name")
    nasdaq, other = write(tmp_path)

    first = sync(nasdaq, other)
    assert (first["added"], first["updated"], first["deactivated"]) == (6, 1, 1)
    assert first["listed"] == 7 and first["deactivated_tickers"] == ["GONE"]
    assert first["exchanges_covered"] == ["AMEX", "NASDAQ", "NYSE", "OTHER"]
    aapl, imo, qqq = (Ticker.objects.get(symbol=s) for s in ("AAPL", "IMO", "QQQ"))
    assert (aapl.name, aapl.exchange, aapl.active) == ("Apple Inc. - Common Stock", "NASDAQ", True)
    assert imo.exchange == "AMEX" and qqq.is_etf
    assert not Ticker.objects.filter(symbol__in=["ZXZZT", "SPY"]).exists()  # test issue; Arca not kept
    assert not Ticker.objects.get(symbol="GONE").active and PriceBar.objects.filter(ticker=legacy).count() == 1

    # OLDCO is delisted: inactive, bars kept
    oldco = Ticker.objects.get(symbol="OLDCO")
    PriceBar.objects.create(ticker=oldco, date=date(2024, 6, 28), open=2, high=2, low=2, close=2, adj_close=2,
                            volume=5)
    nasdaq, other = write(tmp_path, other_rows=[r for r in OTHER_ROWS if not r.startswith("OLDCO|")])
    dropped = sync(nasdaq, other)
    assert (dropped["added"], dropped["updated"], dropped["deactivated"], dropped["unchanged"]) == (0, 0, 1, 6)
    assert dropped["deactivated_tickers"] == ["OLDCO"]
    oldco.refresh_from_db()
    assert not oldco.active and PriceBar.objects.filter(ticker=oldco).count() == 1
    run = IngestionRun.objects.get(id=dropped["ingestion_run"])
    assert (run.kind, run.status) == ("universe", "succeeded") and "OLDCO" in run.error

    # listed again: reactivated
    nasdaq, other = write(tmp_path)
    back = sync(nasdaq, other)
    assert (back["reactivated"], back["deactivated"]) == (1, 0)
    assert Ticker.objects.get(symbol="OLDCO").active


def test_one_file_only_touches_its_own_exchanges(tmp_path):
    nasdaq, other = write(tmp_path)
    sync(nasdaq, other)
    Ticker.objects.create(symbol="NOEXCH")  # unknown exchange: only a full sync may retire it
    nasdaq, _ = write(tmp_path, nasdaq_rows=NASDAQ_ROWS[:1])  # MSFT and QQQ left Nasdaq
    result = sync(nasdaq)
    assert result["exchanges_covered"] == ["NASDAQ"]
    assert sorted(result["deactivated_tickers"]) == ["MSFT", "QQQ"]
    assert Ticker.objects.filter(symbol__in=["IBM", "KO", "OLDCO", "IMO", "NOEXCH"], active=True).count() == 5


def test_a_truncated_directory_does_not_retire_the_universe(tmp_path):
    rows = [f"S{i:03d}|Stock {i} Common Stock|Q|N|N|100|N|N" for i in range(40)]
    nasdaq, _ = write(tmp_path, nasdaq_rows=rows)
    sync(nasdaq)
    nasdaq, _ = write(tmp_path, nasdaq_rows=rows[:5])
    with pytest.raises(CommandError, match="refusing to deactivate 35 of 40"):
        sync(nasdaq)
    assert Ticker.objects.filter(active=True).count() == 40
    assert sync(nasdaq, "--force")["deactivated"] == 35


class DirectoryServer(FakeProviderServer):
    """The fake provider server plus Nasdaq Trader's symbol directory files."""

    files: dict[str, bytes] = {}

    def _dispatch(self, raw_path, headers):
        name = raw_path.rsplit("/", 1)[-1]
        if name in self.files:
            with self._lock:
                self.requests.append(None)
            return 200, self.files[name], {"Content-Type": "text/plain"}
        return super()._dispatch(raw_path, headers)


def test_download_from_nasdaqtrader(monkeypatch):
    reset_limiters()
    server = DirectoryServer()
    server.files = {"nasdaqlisted.txt": directory(NASDAQ_HEADER, NASDAQ_ROWS).encode(),
                    "otherlisted.txt": directory(OTHER_HEADER, OTHER_ROWS).encode()}
    try:
        monkeypatch.setenv("NASDAQTRADER_BASE_URL", f"{server.base_url}/dynamic/SymDir")
        result = sync("nasdaqtrader")
        assert result["added"] == 7 and result["calls"] == 2 and len(server.requests) == 2
        assert Ticker.objects.filter(exchange="NYSE").count() == 3
        assert IngestionRun.objects.get(id=result["ingestion_run"]).source == "nasdaqtrader"
        calls = CostRecord.objects.filter(category="data_api", source="nasdaqtrader")
        assert sorted(calls.values_list("detail", flat=True)) == ["nasdaqlisted.txt", "otherlisted.txt"]
        server.files = {}  # 404: the command fails, nothing changes
        with pytest.raises(CommandError, match="download failed"):
            sync("nasdaqtrader")
        assert Ticker.objects.filter(active=True).count() == 7
    finally:
        server.close()
        reset_limiters()
