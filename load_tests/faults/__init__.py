"""``make faults``: faults injected into the real pipeline under load, and what came out."""
