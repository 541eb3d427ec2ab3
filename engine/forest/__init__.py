"""The model format: XGBoost UBJSON artifacts read and compiled into flat numpy forests.

:mod:`~engine.forest.ubjson` is a strict, bounded UBJSON reader, :mod:`~engine.forest.trees`
reads a model's trees into node arrays, :mod:`~engine.forest.compiled` builds the
:class:`CompiledForest` a model host predicts with, and :mod:`~engine.forest.stacked` walks
many forests together for batch scoring. It imports nothing else of tenantry: serving,
batch scoring and training's checks build on it.
"""

from engine.forest.compiled import (
    FOREST_VERSION,
    CompiledForest,
    ForestUnsupported,
    MalformedModel,
    compile_forest,
    probe_rows,
)
from engine.forest.stacked import (
    ForestStack,
    forest_of,
    stack_forests,
    walk_forest,
    walk_stack,
    widen,
)
from engine.forest.ubjson import TypedArray, UBJSONError

__all__ = [
    "FOREST_VERSION", "CompiledForest", "ForestStack", "ForestUnsupported", "MalformedModel",
    "TypedArray", "UBJSONError", "compile_forest", "forest_of", "probe_rows", "stack_forests",
    "walk_forest", "walk_stack", "widen",
]
