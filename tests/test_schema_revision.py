"""The schema check without alembic: the head revision read from the scripts, the plain-SQL
revision check behind /healthz, and a start on a current schema that skips alembic."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from bot.settings import normalize_database_url
from bot.storage.db import MIGRATIONS_DIR, create_engine, head_revision, migrate, schema_is_current

REPO = Path(__file__).resolve().parent.parent


def test_head_revision_matches_alembic() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def run_python(code: str, *, cwd: Path) -> dict[str, object]:
    """Run `code` in a new interpreter, as a serving process would, and return the JSON it prints last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                            timeout=120, check=False, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    output: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return output


def test_health_check_imports_no_alembic(tmp_path: Path) -> None:
    outcome = run_python(f"""
        import asyncio, json, sys
        from bot.storage.db import create_engine, schema_is_current

        async def main():
            engine = create_engine("sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
            current = await schema_is_current(engine)
            await engine.dispose()
            return current

        current = asyncio.run(main())
        print(json.dumps({{"current": current, "alembic": sorted(name for name in sys.modules
                                                                 if name.split(".")[0] in ("alembic", "mako"))}}))
    """, cwd=tmp_path)
    assert outcome["current"] is False
    assert outcome["alembic"] == []


def test_restart_on_current_schema_skips_alembic(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    run_python(f"""
        import asyncio, json
        from bot.storage.db import create_engine, migrate

        async def main():
            engine = create_engine("{url}")
            await migrate(engine)
            await engine.dispose()

        asyncio.run(main())
        print(json.dumps({{}}))
    """, cwd=tmp_path)
    again = run_python(f"""
        import asyncio, json, sys
        from bot.storage.db import create_engine, migrate

        async def main():
            engine = create_engine("{url}")
            await migrate(engine)
            await engine.dispose()

        asyncio.run(main())
        print(json.dumps({{"alembic": "alembic" in sys.modules}}))
    """, cwd=tmp_path)
    assert again["alembic"] is False


async def test_schema_check_reads_version_row(tmp_path: Path) -> None:
    engine = create_engine(normalize_database_url(f"sqlite:///{tmp_path / 'bot.db'}"))
    try:
        assert not await schema_is_current(engine)
        await migrate(engine)
        assert await schema_is_current(engine)
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        assert not await schema_is_current(engine)
    finally:
        await engine.dispose()
