"""Keeps a session's /workspace in sync with its S3 prefix: pull at start, push changes, flush on stop."""
