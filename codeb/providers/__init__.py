"""Clients of the world outside codeb: one package per kind, each a Protocol and its real client."""
