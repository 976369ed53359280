"""The lowest layer: building blocks shared by problems, methods and the harness (pure error
metrics, the symbolic token language, the on-disk cache). It imports none of them
(docs/architecture.md)."""
