"""Development helpers: test models built from config, local servers for tests and benches."""
