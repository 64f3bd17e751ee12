"""The MCP tools of autoscaling (issue 14), over the same routes as `codeb scaling ...`:

- `scaling_policy` and `scaling_history` read;
- `scaling_check` asks for the policy's decision now (`scaling_check`, SAFE: it only looks,
  and records the decision in the history);
- `scale_up` (`scale_up`, LOW by default: it starts at once) and `scale_down` (`scale_down`,
  MEDIUM by default: it comes back as needs_a_person, with the command a person runs) pass
  the Protection Layer exactly as the HTTP requests do: the tools only request.

The settings (and the Vultr API key) are not offered: they are a person's business."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from codeb.client import Json

if TYPE_CHECKING:
    from codeb.mcp.server import Tools, ToolSpec

HistoryKind = Literal["check", "up", "down", "orphan"]


class ScalingTools:
    def __init__(self, tools: Tools) -> None:
        self._tools = tools

    def _request(self, method: str, path: str, **kwargs: object) -> Json:
        t = self._tools
        return t._call(t.client.request, method, path, **kwargs)

    def scaling_policy(self) -> Json:
        """The autoscaling policy (thresholds, windows, cooldowns, min/max servers, monthly
        cost cap), the cloud settings (never the API key) and the app pool now."""
        return self._request("GET", "/api/scaling/policy")

    def scaling_history(
        self, kind: HistoryKind | None = None, limit: int = 20, offset: int = 0
    ) -> Json:
        """Autoscaling's decisions and actions, newest first: inputs and reasons, each step
        with its duration, the failed step, cost and outcome."""
        params: dict[str, object] = {"limit": limit, "offset": offset}
        if kind:
            params["kind"] = kind
        return self._request("GET", "/api/scaling/history", params=params)

    def scaling_check(self) -> Json:
        """What the autoscaling policy decides now (up, down or none) with its inputs (the app
        pool's live load, servers, cost) and reasons. Acts on nothing."""
        t = self._tools
        return t._mutate(t.client.request, "POST", "/api/scaling/check")

    def scale_up(self) -> Json:
        """Add one app server at the cloud (it costs money; within the policy's maximum and
        cost cap): a replica of what each scaling environment runs, behind the proxies.
        Starts an operation; follow it with follow_operation."""
        t = self._tools
        return t._mutate(t.client.request, "POST", "/api/scaling/up", json={})

    def scale_down(self, server: str | None = None) -> Json:
        """Request the removal of one app server autoscaling added (default: the newest); it
        is drained from the proxies first. Servers holding data or not made by autoscaling are
        refused. A person confirms it (the answer says how)."""
        t = self._tools
        body = {"server": server} if server else {}
        return t._mutate(t.client.request, "POST", "/api/scaling/down", json=body)


def scaling_specs(tools: Tools, spec: type[ToolSpec]) -> list[ToolSpec]:
    s = ScalingTools(tools)
    return [
        spec("scaling_policy", "Show the autoscaling policy", None, s.scaling_policy,
             "get /api/scaling/policy"),
        spec("scaling_history", "Autoscaling history", None, s.scaling_history,
             "get /api/scaling/history"),
        spec("scaling_check", "Ask the autoscaling policy", "scaling_check", s.scaling_check,
             "post /api/scaling/check"),
        spec("scale_up", "Add an app server", "scale_up", s.scale_up, "post /api/scaling/up"),
        spec("scale_down", "Request an app server removal", "scale_down", s.scale_down,
             "post /api/scaling/down"),
    ]  # fmt: skip
