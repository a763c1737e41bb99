"""The Renode peripheral generator: CMSIS-SVD → typed register map → C# model, checked by
validators (syntax, mcs compile, register accuracy, conventions) that score a confidence."""

from __future__ import annotations

from arbor.apps.renode.emitter import EmittedModel, emit_model
from arbor.apps.renode.regmap import RegisterMap, RenodeError
from arbor.apps.renode.svd import SvdDevice, load_device
from arbor.apps.renode.validate import Confidence, validate_many, validate_source

__all__ = [
    "Confidence",
    "EmittedModel",
    "RegisterMap",
    "RenodeError",
    "SvdDevice",
    "emit_model",
    "load_device",
    "validate_many",
    "validate_source",
]
