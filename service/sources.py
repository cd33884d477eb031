"""What a served entry's path names: a bundle, or a reward model to import first (a plain directory or hub name).

``serve --model SRC``, a models file's ``path`` and ``PUT /admin/models/{name}`` take the sources
``rewardserve import`` takes. A source without a card is imported once, with the same proof, into
``$REWARDSERVE_HOME/imported/`` (:func:`rewardmodel.importer.ensure_bundle`); the import needs torch and
transformers and runs off the event loop. An import has no ONNX variant until ``rewardserve export``, so
``--backend auto`` serves it on the torch backend.
"""

from __future__ import annotations

from pathlib import Path

from rewardmodel import CARD_NAME, VerifiedFiles
from service.settings import ServiceSettings


def verified_files(settings: ServiceSettings) -> VerifiedFiles:
    """Where the hashes of verified bundle files are remembered, so a large bundle is hashed once."""
    return VerifiedFiles(settings.home / "verified")


def bundle_path(source: Path, settings: ServiceSettings) -> Path:
    """The bundle ``source`` is, or its import (imported now, proof and all, when not yet)."""
    if (source / CARD_NAME).is_file():
        return source
    from rewardmodel.families import ImportOptions
    from rewardmodel.importer import ensure_bundle

    return ensure_bundle(str(source), settings.home, ImportOptions(trust_remote_code=settings.trust_remote_code),
                         verified_files(settings), settings.device)
