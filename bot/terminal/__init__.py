"""`secretbot run`: the runbooks driven from a terminal, for when Slack is unavailable.

The run uses the same engine, runbooks, database and audit log as `secretbot serve`, and
is recorded with origin "terminal". The person at the terminal confirms each step,
answers approvals and enters values; a `serve` process sharing the database leaves the
run alone.
"""
