"""The inventory of secrets on each configured Fly app and their rotation schedule."""

from bot.inventory.schedule import SecretStatus, State, assess, reminder_section
from bot.inventory.store import InventoryStore
from bot.inventory.sync import AppSync, InventorySync

__all__ = ["AppSync", "InventoryStore", "InventorySync", "SecretStatus", "State", "assess", "reminder_section"]
