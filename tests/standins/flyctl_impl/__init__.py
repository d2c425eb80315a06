"""Implementation of the flyctl stand-in executable `tests/standins/flyctl`.

Standard library only: the bot starts the stand-in as a separate process with a minimal
environment, through whichever `python3` comes first on PATH, so nothing from the
project's virtualenv can be assumed.
"""
