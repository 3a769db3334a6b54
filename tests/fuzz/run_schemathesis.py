"""`make fuzz`: schemathesis against a real server on a fresh, migrated SQLite database.

Starts `aether serve` (see `tests.fuzz.server`), then runs `st run` on its /openapi.json
with the tenant's API key, bounded in examples and time, checking that no request gets a
5xx and that every response matches the documented schema. Exits with schemathesis's code.

    .venv/bin/python -m tests.fuzz.run_schemathesis [--max-examples 20] [--include REGEX]
        [--checks not_a_server_error,response_schema_conformance,positive_data_acceptance]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz.server import BIN, running_server

CHECKS = "not_a_server_error,response_schema_conformance"
#: A handful of operations that cover create, read, update, delete, list, search and schema.
DEFAULT_INCLUDE = r"^/v3/crud/(event|event_session)(/\{id\}|/search|/schema)?$|^/v3/crud/schema$"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=20)
    parser.add_argument("--max-time", type=int, default=150, help="seconds for the whole run")
    parser.add_argument("--include", default=DEFAULT_INCLUDE, help="path regex of operations")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--checks",
        default=CHECKS,
        help="schemathesis checks; add positive_data_acceptance to see where the API refuses "
        "what the schema allows (references, uniqueness and cursors are refused by design)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    st = shutil.which("st", path=str(BIN))
    if st is None:
        print("schemathesis is not installed: .venv/bin/pip install 'schemathesis>=4,<5'")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="aether-fuzz-"))
    try:
        with running_server(workdir / "server") as server:
            command = [
                st,
                "run",
                f"{server.url}/openapi.json",
                "--url",
                server.url,
                "--header",
                f"X-API-Key: {server.api_key}",
                "--checks",
                args.checks,
                "--max-examples",
                str(args.max_examples),
                "--max-time",
                str(args.max_time),
                "--include-path-regex",
                args.include,
                "--request-timeout",
                "10",
                # The recursive search filter (a body, and the list's `filter` parameter)
                # has a large minimal example; that is the grammar, not a defect.
                "--suppress-health-check",
                "large_base_example",
                # Otherwise random `Authorization` values (a documented scheme) replace the key.
                "--generation-with-security-parameters",
                "false",
                "--workers",
                "1",
                "--no-color",
                "--report",
                "junit",
                "--report-dir",
                str(workdir / "report"),
            ]
            if args.seed is not None:
                command += ["--seed", str(args.seed)]
            print(
                "running:",
                " ".join(c if "X-API-Key" not in c else "X-API-Key: ***" for c in command),
            )
            code = subprocess.call(command, timeout=args.max_time + 120)
            print(f"server log: {server.log}; report: {workdir / 'report'}")
            return code
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
