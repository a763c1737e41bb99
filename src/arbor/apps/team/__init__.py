"""The software team app: analyst → developer → QA ∥ DevOps → sandboxed tests (looping back to
the developer on failure) → technical writer → report, in one workspace directory per run.

See :mod:`arbor.apps.team.workflow` for the graph and :mod:`arbor.apps.team.files` for how
files come out of a model's reply (structured output, or fenced blocks for weak models).
"""
