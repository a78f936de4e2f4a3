"""The CLI's commands, one module per group: the operator commands (``calls``, ``dead-letters``,
``replay``, ``handlers``, ``starting``: the same answers over the admin API (``--url``) or from the
local database opened read-only), ``send``, ``migrate``/``check-config`` and the sandbox's."""
