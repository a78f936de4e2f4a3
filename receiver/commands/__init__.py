"""Operator commands of the CLI (``calls``, ``dead-letters``, ``replay``, ``handlers``,
``starting``): the same answers over the admin API (``--url``) or from the local database opened
read-only (writes only where the command is itself a write, and never a lease)."""
