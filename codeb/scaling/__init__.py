"""Autoscaling (issue 14): the policy as a pure decision; the actions build on providers.cloud."""
