"""codeb_quadlet_probe runs on its host without AnsiballZ: codeb_direct.py says how and why."""

from ansible.plugins.loader import action_loader

ActionModule = action_loader.get("codeb_direct", class_only=True)
