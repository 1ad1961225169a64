"""The app layer: model specs, inputs and run folders turned into library calls (see
``docs/architecture.md``). ``cli/``, ``serve`` and the Ray engine call it."""
