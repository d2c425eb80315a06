"""`secretbot import`: set an app's secrets from an operator's env file, without Slack seeing a value."""
