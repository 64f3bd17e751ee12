"""The executor: codeb changes servers only by running its own playbooks through
ansible-runner. `runner` is the only module that imports ansible_runner."""
