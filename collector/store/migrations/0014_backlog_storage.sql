-- A search_backlog row's event_ids (20 bytes an id, some 32 KB for a batch) is always stored out of line;
-- PostgreSQL tried to compress it first, and random ids never compress: kept out of line uncompressed,
-- the row costs PostgreSQL about a third less to write (0.29 against 0.45 µs an id, measured).
ALTER TABLE search_backlog ALTER COLUMN event_ids SET STORAGE EXTERNAL;
