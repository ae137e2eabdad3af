"""Personal data in call records: masking before storage (:mod:`.pii`)."""
