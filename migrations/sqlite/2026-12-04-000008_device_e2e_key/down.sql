ALTER TABLE notifications DROP COLUMN encrypted;
ALTER TABLE devices DROP COLUMN e2e_public_key;
