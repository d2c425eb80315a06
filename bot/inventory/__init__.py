"""The inventory of secrets on each configured Fly app and their rotation schedule."""

from bot.inventory.schedule import SecretStatus, State, assess, reminder_section
from bot.inventory.store import InventoryStore

__all__ = ["InventoryStore", "SecretStatus", "State", "assess", "reminder_section"]
