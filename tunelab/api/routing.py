"""The route class every API router uses: responses pass through their declared `response_model`
(so the document's schemas are what is sent), without adding the fields a handler left out."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute


class ContractRoute(APIRoute):
    def __init__(self, path: str, endpoint: Any, **kwargs: Any):
        # A handler's dict is validated against the shared model (tunelab.contract), then sent with
        # only the keys it set: a list entry does not grow `"report": null`, a catalog model does
        # not grow `"base_model": null`. Extra keys are kept (the models allow them).
        kwargs["response_model_exclude_unset"] = True
        super().__init__(path, endpoint, **kwargs)
