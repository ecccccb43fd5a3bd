"""The jointinference runner behind ``cepr run``: Ianvs's YAML and semantics, plus persistence and resume."""
