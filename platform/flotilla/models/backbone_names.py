"""The backbone names a spec may use, torch-free.

:data:`flotilla.models.backbones.BACKBONES` builds the networks and needs torch; a spec
(``model.backbone``) must be checked without paying for that import, so the names live
here and the builders are keyed by these constants (a unit test keeps the two in step).
"""

from __future__ import annotations

from flotilla.errors import SpecError

SMALL_CNN = "small_cnn"
RESNET = "resnet"

BACKBONE_NAMES: tuple[str, ...] = (SMALL_CNN, RESNET)
"""Every backbone by the name a spec gives it: the one list of backbone names."""

DEFAULT_BACKBONE = SMALL_CNN


def check_backbone_name(name: str) -> str:
    """``name`` when it is a known backbone; otherwise a SpecError listing the known ones."""
    if not isinstance(name, str) or name not in BACKBONE_NAMES:
        raise SpecError(f"unknown backbone {name!r}; choose one of: {', '.join(BACKBONE_NAMES)}")
    return name
