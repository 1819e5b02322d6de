"""The agent loop (LLM <-> tools), its events, messages and compaction."""
