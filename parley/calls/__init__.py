"""A call's life: session, recorder, simulated calls, reports."""
