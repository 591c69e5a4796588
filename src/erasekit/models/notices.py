"""transformers warns, for each image processor it imports, that torchvision is missing and that it falls back to
PIL. erasekit never needs torchvision (there is no CPU build of it here), so that one notice is dropped where
erasekit loads transformers; every other transformers warning still shows."""
from __future__ import annotations

import logging

NOTICE = "requires torchvision (not installed)"


class DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return NOTICE not in record.getMessage()


def silence_torchvision_notice() -> None:
    """Filter the notice at the logger that emits it, so neither transformers' handler nor a propagated copy
    (transformers propagates when CI is set) shows it. Idempotent."""
    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, DropTorchvisionNotice) for f in logger.filters):
        logger.addFilter(DropTorchvisionNotice())
