"""The knowledge base: documents a tenant uploads, chunked, embedded locally and searched during calls."""
