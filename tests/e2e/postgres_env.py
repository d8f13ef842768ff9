"""A real PostgreSQL server for the request-log tests: Debian's ``postgresql`` package
(``initdb``/``pg_ctl`` under ``/usr/lib/postgresql/<v>/bin``, or ``PG_BIN``), a fresh cluster in a
temporary directory, on a free loopback port, run as the ``postgres`` user when the tests run as
root. ``tests/run.sh`` installs the package when ``initdb`` is missing; without it the tests fail
(they never skip)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator


def pg_bin() -> Path:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL not found: apt-get install -y postgresql (or set PG_BIN)")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """One PostgreSQL cluster; ``stop``/``start`` keep its data (an outage, not a new database)."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-reqlog-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "gw", "--auth=trust", "-E", "UTF8"])

    @property
    def url(self) -> str:
        return f"postgresql://gw@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        kw = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120, cwd=self.dir, **kw)

    def start(self) -> "Postgres":
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"])
        return self

    def stop(self) -> None:
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def sql(self, query: str) -> list[tuple]:
        """Runs ``query`` with psql; rows as tuples of strings (tab-separated output)."""
        out = self._run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "gw", "-d", "postgres",
             "-X", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", query]
        ).stdout
        return [tuple(line.split("\t")) for line in out.splitlines() if line]

    @contextlib.contextmanager
    def writes_blocked(self, table: str = "llm_gateway.requests") -> Iterator[None]:
        """Holds an EXCLUSIVE lock on ``table`` (reads go on, every insert waits) until the block ends."""
        kw = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        psql = subprocess.Popen(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "gw", "-d", "postgres",
             "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=self.dir, **kw,
        )
        assert psql.stdin is not None and psql.stdout is not None
        psql.stdin.write(f"BEGIN; LOCK TABLE {table} IN EXCLUSIVE MODE; SELECT 'locked';\n")
        psql.stdin.flush()
        assert psql.stdout.readline().strip() == "locked", "the lock was not taken"
        try:
            yield
        finally:
            psql.communicate("ROLLBACK;\n", timeout=30)

    def count(self, schema: str = "llm_gateway") -> int:
        try:
            return int(self.sql(f"SELECT count(*) FROM {schema}.requests")[0][0])
        except subprocess.CalledProcessError:
            return 0


def wait_rows(pg: Postgres, n: int, timeout: float = 30.0, schema: str = "llm_gateway") -> int:
    deadline = time.monotonic() + timeout
    while True:
        got = pg.count(schema)
        if got >= n or time.monotonic() > deadline:
            return got
        time.sleep(0.1)
