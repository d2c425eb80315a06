"""The runbook engine: step kinds, run state and the engine that advances runs."""
