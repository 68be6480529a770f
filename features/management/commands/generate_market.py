"""Write a synthetic market (features.synthetic) to CSV, CSV.gz or Parquet.

Thin wrapper: the bars come from ``features.synthetic.iter_market_chunks`` (the chunked form of
``generate_market``, same output) and are appended to the file chunk by chunk, so memory stays
bounded for a full-size universe.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pandas as pd
from django.core.management.base import BaseCommand, CommandError

from features.synthetic import iter_market_chunks


class Command(BaseCommand):
    help = (
        "Generate synthetic daily bars (date,open,high,low,close,adj_close,volume,ticker) and write "
        "them to --out (.csv, .csv.gz or .parquet, by extension)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tickers", type=int, default=100)
        parser.add_argument("--years", type=float, default=10.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--start", default="2010-01-04")
        parser.add_argument("--out", required=True)
        parser.add_argument("--actions-out", help="also write splits/dividends (ticker,date,kind,value) CSV")
        parser.add_argument("--chunk-size", type=int, default=500)

    def handle(self, *args, **opts):
        out = Path(opts["out"])
        name = out.name.lower()
        if not name.endswith((".csv", ".csv.gz", ".parquet")):
            raise CommandError("--out must end with .csv, .csv.gz or .parquet")
        if opts["tickers"] <= 0 or opts["years"] <= 0:
            raise CommandError("--tickers and --years must be positive")
        out.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        chunks = iter_market_chunks(
            opts["tickers"], opts["years"], opts["seed"], opts["start"], chunk_size=opts["chunk_size"]
        )
        rows, done, actions = 0, 0, []
        writer = _Writer(out)
        try:
            for bars, acts in chunks:
                writer.write(bars)
                actions.append(acts)
                rows += len(bars)
                done = min(opts["tickers"], done + opts["chunk_size"])
                self.stdout.write(
                    f"  {done}/{opts['tickers']} tickers, {rows:,} rows ({time.perf_counter() - t0:.1f}s)"
                )
        finally:
            writer.close()
        if opts["actions_out"]:
            pd.concat(actions, ignore_index=True).to_csv(opts["actions_out"], index=False)
        secs = time.perf_counter() - t0
        self.stdout.write(
            self.style.SUCCESS(f"wrote {out}: {rows:,} rows, {opts['tickers']} tickers in {secs:.1f}s")
        )


class _Writer:
    """Appends chunks to one CSV / CSV.gz / Parquet file."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "parquet" if path.name.lower().endswith(".parquet") else "csv"
        self._fh = None
        self._pq = None
        self._header = True

    def write(self, bars) -> None:
        if self.kind == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(bars, preserve_index=False)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table)
            return
        if self._fh is None:
            gz = self.path.name.lower().endswith(".gz")
            self._fh = gzip.open(self.path, "wt", compresslevel=6) if gz else open(self.path, "w")  # noqa: SIM115
        bars.to_csv(self._fh, index=False, header=self._header, float_format="%.6f", date_format="%Y-%m-%d")
        self._header = False

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
