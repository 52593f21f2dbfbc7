"""A throwaway PostgreSQL server for tests, benchmarks and CI: ``initdb`` + ``pg_ctl`` in a temporary folder, on a
free loopback port, trust authentication, removed on stop.

It uses the machine's PostgreSQL binaries (``initdb`` on ``PATH`` or Debian's ``/usr/lib/postgresql/<v>/bin``).
PostgreSQL refuses to run as root; as root the server runs as the ``postgres`` user (Debian's package creates it)
through ``runuser``.

    with TemporaryPostgres() as pg:
        url = pg.create_database("t1")        # postgresql://postgres@127.0.0.1:<port>/t1

From a shell (``.ci/run``)::

    python -m radialrouter.serve.pgtesting start DIR   # prints the URL; the server keeps running
    python -m radialrouter.serve.pgtesting stop DIR
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from radialrouter.serve.testing import free_port

RUN_AS = "postgres"


def find_bin_dir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


class TemporaryPostgres:
    """One PostgreSQL cluster in ``base_dir`` (a new temporary folder by default). ``durable=False`` turns fsync
    off (tests: faster, and a crash of the test machine loses nothing that matters)."""

    def __init__(self, base_dir: str | Path | None = None, port: int | None = None, durable: bool = False) -> None:
        self.bin = find_bin_dir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL binaries not found (no initdb on PATH or in /usr/lib/postgresql/*/bin); "
                               "install them, e.g. apt-get install postgresql")
        self._own_dir = base_dir is None
        self.dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="radialrouter-pg-"))
        self.data = self.dir / "data"
        self.port = port or free_port()
        self.durable = durable
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(RUN_AS)
            except KeyError:
                raise RuntimeError(f"running as root, and there is no {RUN_AS!r} user to run PostgreSQL as "
                                   f"(useradd --system {RUN_AS})") from None
            self.user = RUN_AS

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def start(self, timeout: float = 60.0) -> TemporaryPostgres:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            info = pwd.getpwnam(self.user)
            os.chown(self.dir, info.pw_uid, info.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            try:
                self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                          "--no-instructions")
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"initdb failed: {exc.stderr.strip() or exc.stdout.strip()}") from None
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   f"-c shared_buffers=64MB" + ("" if self.durable else " -c fsync=off -c full_page_writes=off"))
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options, "-w",
                           "-t", str(int(timeout)), "start", check=False)
        if result.returncode != 0:
            log = (self.dir / "server.log").read_text(errors="replace")[-2000:] if (self.dir / "server.log").exists() \
                else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr.strip()}\n{log}")
        (self.dir / "url").write_text(self.url + "\n")
        return self

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TemporaryPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"start", "stop"}:
        print("usage: python -m radialrouter.serve.pgtesting start|stop DIR", file=sys.stderr)
        return 2
    action, folder = argv[0], Path(argv[1])
    if action == "start":
        pg = TemporaryPostgres(folder).start()
        pg._own_dir = False
        print(pg.url)
        return 0
    pg = TemporaryPostgres(folder)
    pg._own_dir = True
    pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
