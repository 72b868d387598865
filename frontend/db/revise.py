"""Write a new migration from the difference between the models and the migrations so far.

    python -m frontend.db.revise "add volumes.bootable"

Review the file it writes under migrations/versions/ before committing it.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from .engine import MIGRATIONS, Database, upgrade


def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'revise.db'}")
        upgrade(db)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with db.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.revision(config, message=message, autogenerate=True)
        db.dispose()


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "change")
