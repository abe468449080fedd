"""The ``yurt`` command: one module per subcommand, each only an adapter over the library."""
