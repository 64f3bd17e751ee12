"""How a codeb module is written, so that it runs two ways with the same code.

A module file defines `SPEC` (its argument spec), `CHECK_MODE` (whether it supports check
mode) and `run(params, check, diff)`, which returns the result or raises `Fail`; its last
lines are `if __name__ == "__main__": main(SPEC, run, CHECK_MODE)`, and it imports nothing
from `ansible.module_utils.basic` itself.

- Through AnsiballZ (ansible-doc, a run by hand without codeb's action plugins): `main`
  wraps `run` in an AnsibleModule.
- Through codeb's action plugin (plugins/action/codeb_direct.py): the controller checks the
  arguments against SPEC, and the host's python3 runs the module's source and this module's
  with the checked arguments on stdin, without AnsiballZ. Importing
  `ansible.module_utils.basic` costs about 0.2-0.3 s on a host before a module does anything,
  the better part of a one-host redeploy's overhead; the direct run starts in ~30 ms.

Nothing here imports Ansible at the top, so the direct run never loads it."""


class Fail(Exception):
    """The module failed: `msg` and the rest of the failed result."""

    def __init__(self, msg, **result):
        super().__init__(msg)
        self.result = dict(result, msg=msg)


def main(spec, run, check_mode):
    """The AnsiballZ way: an AnsibleModule parses the arguments, `run` does the work."""
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=spec, supports_check_mode=check_mode)
    try:
        result = run(module.params, module.check_mode, module._diff)
    except Fail as exc:
        module.fail_json(**exc.result)
    module.exit_json(**result)
