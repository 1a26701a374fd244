"""Deployments: model servers, their backends and the supervisor."""
