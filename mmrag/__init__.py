"""mmrag's entry points: the `mmrag` command (cli.py) and the app launcher. They compose rag/, ingest/ and eval/."""
