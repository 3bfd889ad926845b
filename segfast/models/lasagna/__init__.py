"""LaSagnA: many and absent targets per query on the LISA base."""
