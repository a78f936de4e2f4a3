"""Telephony presets (CONTRACT §9): carrier callbacks verified with the carrier's own signature.

``twilio`` and ``telnyx`` are pure (verify, parse, sign); ``desk`` holds the use cases; ``routes`` the
endpoints; ``pbx`` the field mapping and bearer token of ``/events/call-ended``; ``setup`` wires it
all from the settings; ``dev`` holds the sandbox's development credentials and ``send`` builders.
"""
