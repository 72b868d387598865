"""The suite's own PostgreSQL server: it starts, serves SQLAlchemy, and leaves nothing behind."""

from __future__ import annotations

import psutil
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy.exc import OperationalError

from localcluster.pgserver import PostgresServer

pytestmark = pytest.mark.slow


def test_server_roundtrip_and_clean_stop() -> None:
    with PostgresServer() as pg:
        datadir = str(pg.datadir)
        url = pg.create_database("roundtrip")
        assert url == f"postgresql+psycopg://postgres@127.0.0.1:{pg.port}/roundtrip"

        meta = MetaData()
        hosts = Table("hosts", meta, Column("id", Integer, primary_key=True), Column("name", String(64)))
        engine = create_engine(url)
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(hosts.insert(), [{"name": "host000"}, {"name": "host001"}])
        leaked = engine.connect()
        assert leaked.execute(select(hosts.c.name).order_by(hosts.c.id)).scalars().all() == [
            "host000", "host001"]
        # drop_database must terminate sessions still open on it, not wait for them.
        pg.drop_database("roundtrip")
        with pytest.raises(OperationalError, match="terminating connection"):
            leaked.execute(select(1))
        leaked.close()
        engine.dispose()
        admin = create_engine(pg.url("postgres"))
        with admin.connect() as conn:
            assert "roundtrip" not in conn.execute(text("SELECT datname FROM pg_database")).scalars().all()
        admin.dispose()

        postmaster = psutil.Process(pg.postmaster_pid)
        server = [postmaster, *postmaster.children(recursive=True)]
        assert len(server) > 1  # the postmaster and its checkpointer, walwriter, ...
        rundir = pg.dir

    _, alive = psutil.wait_procs(server, timeout=5)
    assert not alive
    assert not [p for p in psutil.process_iter(["cmdline"]) if datadir in " ".join(p.info["cmdline"] or [])]
    assert rundir is not None and not rundir.exists()
