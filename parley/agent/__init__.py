"""The conversation: agent documents, context, sentences for speech."""
