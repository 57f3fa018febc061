ALTER TABLE devices DROP COLUMN groups;
