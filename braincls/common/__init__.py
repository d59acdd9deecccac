"""Plumbing every stage shares: atomic writes, hashes, table schemas, the data-root layout,
stage records (the one cache), JSON conversion and the research-use notices."""
