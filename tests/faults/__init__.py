"""The issue-9 fault matrix: every scenario end to end through the CLI against the emulators,
judged from the emulators' own records. ``python -m tests.faults`` prints the table;
``tests/faults/test_matrix.py`` runs the same rows under pytest."""
