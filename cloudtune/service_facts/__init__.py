"""The services' published rules as data (models, regions, SKUs, retirements, shutdown dates),
each module dated and sourced. Providers read them to refuse early and explain; the emulators
read the same tables to refuse what the real services refuse, so a provider that stops honouring
a rule fails the test suite. Plain data and pure functions: no SDK imports."""
