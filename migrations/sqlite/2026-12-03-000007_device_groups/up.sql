-- Device groups ("topics"): the names a device belongs to, as one JSON array sealed under the
-- devices key like the row's other settings (NULL: no groups). The queue holds every device's
-- groups in memory, so nothing is looked up by group in SQL.
ALTER TABLE devices ADD COLUMN groups BLOB;
