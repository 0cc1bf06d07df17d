"""``celrec serve``: the HTTP service alone, against the configured backends."""

from __future__ import annotations

import uvicorn

from celrec.backends import make_event_log, make_state_store
from celrec.logs import configure_logging
from celrec.settings import Settings
from service.app import build_state, create_app


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level)
    if settings.model in ("saml", "dupn") and settings.torch_threads:
        import torch  # the network runs per request: tiny ops, where threads only stall

        torch.set_num_threads(settings.torch_threads)
    app = create_app(build_state(settings, make_event_log(settings), make_state_store(settings)))
    # Our JSON logs carry one line per request; uvicorn's own text logging stays off.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None,
                access_log=False)
    return 0
