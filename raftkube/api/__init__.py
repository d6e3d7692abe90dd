"""raftkube.api: Kubernetes' object model as pure functions over plain dicts.

Kinds and their names (`kinds`), defaulting (`defaults`), validation with field paths
(`validation`, built from `schema`, `metadata`, `podspec`, `containers`, `workloads`,
`core`, `updates`), label and field selectors (`selectors`), quantities (`quantity`), name
syntax (`names`) and JSON merge patches (`merge`). Nothing here does I/O or reads the clock
or randomness, and nothing imports the rest of raftkube: every other layer builds on this
one, so it must stay the one place where "what is a valid Deployment" is decided.
"""
