"""Conversations: native and OpenAI-form messages, the official prompt formats, and response parsing."""
