"""The issue-9 fault matrix: every scenario end to end through the CLI against the emulators,
judged from the emulators' own records.

* ``python -m tests.faults`` prints the table (``-k TEXT`` selects rows, ``--list`` lists them;
  ``CLOUDTUNE_FAULTS_TRACE=1`` prints each CLI call and its duration);
* ``tests/faults/test_matrix.py`` runs the same rows under pytest (CI).

Layout: ``targets`` starts the services (OpenAI emulator, Azure emulator for both routes, the
local provider) once per session; ``records`` reads what each service holds; ``harness`` is one
scenario's world (homes, CLI subprocesses) and the invariants every row ends with; ``matrix``
is the table and its runner; ``scenarios_*`` are the rows. A new row is a function of ``Ctx``
decorated with ``@scenario(name, *targets, issue=...)`` in one of the ``scenarios_*`` modules:
it drives the CLI, asserts what is specific to it with ``expect``, and tracks its runs
(``ctx.run`` does); the runner cleans up and checks the rest.
"""
