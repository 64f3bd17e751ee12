"""Test fleet: real Debian 13 managed servers under systemd-nspawn (see README.md)."""
