-- A failed job keeps the stable code of its error beside the message (e.g. corrupt_document).
ALTER TABLE jobs ADD COLUMN error_code TEXT;
