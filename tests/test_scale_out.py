"""`yibao run --dask local` (issue 7): shards fanned out to a Dask LocalCluster through prefect-dask, reporting
to a real Prefect server started here on 127.0.0.1, write exactly what a single-machine run writes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from flows.sample import write_sample
from tests.builders import table_rows

TABLES = ["settlements", "rejects", "adjudicated", "accumulators", "account_ledger", "account_month_end",
          "contributions", "assistance_applications"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Prefect server did not start")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _yibao(args: list[str], api_url: str, tmp: Path) -> None:
    env = {**os.environ, "PREFECT_API_URL": api_url, "TMPDIR": str(tmp), "PREFECT_LOGGING_LEVEL": "WARNING"}
    out = subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.slow  # 50 s with the machine lightly loaded, 4 min at load 15 (server, two CLI runs, a LocalCluster)
def test_dask_shards_write_what_one_machine_writes(prefect_server, tmp_path):
    bureau = tmp_path / "bureau"
    write_sample(bureau, persons=1500, year=2025, months=2, seed=5, fmt="parquet", invalid_rate=0.01)
    single, fanned = tmp_path / "single.duckdb", tmp_path / "dask.duckdb"
    _yibao(["run", "--year", "2025", "--input", str(bureau), "--db", str(single)], prefect_server, tmp_path)
    _yibao(["run", "--year", "2025", "--input", str(bureau), "--db", str(fanned), "--shards", "3", "--dask", "local"],
           prefect_server, tmp_path)
    for table in TABLES:
        assert table_rows(fanned, table) == table_rows(single, table), table
    assert len(table_rows(single, "adjudicated")) > 1000
    assert len(table_rows(single, "account_ledger")) > 0
    # the shard tasks ran as task runs on the server (each month: three adjudicate-shard runs)
    req = urllib.request.Request(f"{prefect_server}/task_runs/filter", data=json.dumps({"limit": 200}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        names = [t["name"] for t in json.load(r)]
    assert sum(n.startswith("adjudicate-shard") for n in names) == 3 * 2
