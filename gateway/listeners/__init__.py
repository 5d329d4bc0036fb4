"""Listeners: bound addresses and their accept loops."""
