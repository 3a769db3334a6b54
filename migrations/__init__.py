"""Aether's Alembic environment and revisions, shipped inside the installed package.

`engine.migrate` finds this directory through `Path(migrations.__file__).parent` and
configures Alembic in code from `Settings`, so no `alembic.ini` in the working directory
is ever read.
"""
