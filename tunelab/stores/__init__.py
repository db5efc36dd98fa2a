"""Everything tunelab keeps on disk: one SQLite database, a Chroma store, and files."""
